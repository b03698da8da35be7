//go:build cdcd_nomarkcheck

package sinks

// ignoreLostWrites makes this build ignore markers that show a Redis
// failover lost writes: a deliberately broken daemon for the fault suite's
// self-test. Never ship it.
const ignoreLostWrites = true
