package oci_test

import (
	"testing"

	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
	"github.com/airlock-run/airlock/internal/sandbox/oci/ocitest"
)

func TestImages(t *testing.T) {
	t.Parallel()
	for _, binary := range []string{"runc", "crun"} {
		t.Run(binary, func(t *testing.T) {
			t.Parallel()
			ocitest.ExerciseImages(t, tmpRoot, func(t *testing.T, images oci.ImageFunc) sandbox.Runtime {
				opts := options(t, binary)
				opts.Images = images
				return newRuntime(t, opts)
			})
		})
	}
}
