package oci_test

import (
	"testing"

	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
	"github.com/airlock-run/airlock/internal/sandbox/oci/ocitest"
)

func TestNetwork(t *testing.T) {
	t.Parallel()
	for _, binary := range []string{"runc", "crun"} {
		t.Run(binary, func(t *testing.T) {
			t.Parallel()
			ocitest.ExerciseNetwork(t, func(t *testing.T, network oci.NetworkFunc) sandbox.Runtime {
				opts := options(t, binary)
				opts.Network = network
				return newRuntime(t, opts)
			})
		})
	}
}
