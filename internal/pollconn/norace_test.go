//go:build !race

package pollconn_test

const race = false
