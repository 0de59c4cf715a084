//go:build !race

package joblog

const raceEnabled = false
