//go:build race

package pollconn_test

const race = true
