//go:build !cdcd_nomarkcheck

package sinks

// ignoreLostWrites is false in every real build. The fault suite builds
// cdcd with -tags cdcd_nomarkcheck to prove that its Redis failover rounds
// catch a daemon that does not check its markers.
const ignoreLostWrites = false
