//go:build race

package joblog

const raceEnabled = true
