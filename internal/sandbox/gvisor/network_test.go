package gvisor_test

import (
	"testing"

	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
	"github.com/airlock-run/airlock/internal/sandbox/oci/ocitest"
)

func TestNetwork(t *testing.T) {
	t.Parallel()
	ocitest.ExerciseNetwork(t, func(t *testing.T, network oci.NetworkFunc) sandbox.Runtime {
		opts := options(t)
		opts.Network = network
		return newRuntime(t, opts)
	})
}
