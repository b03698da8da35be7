//go:build !race

package pollconn

// raceBuild: see pollconn_race.go.
const raceBuild = false
