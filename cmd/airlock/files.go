package main

// submit --file LOCAL[:REMOTE]: job files uploaded before the job. Each
// regular file is sent once per content (the coordinator is asked first),
// and the spec names it by digest with its mode and modification time.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
)

// localFile is one file to upload and where it goes in the workspace.
type localFile struct {
	local  string
	remote string
	info   fs.FileInfo
}

// parseFileFlags expands --file values: LOCAL:REMOTE, or LOCAL alone for
// its base name; a directory stands for every regular file under it.
func parseFileFlags(values []string) ([]localFile, error) {
	var out []localFile
	for _, v := range values {
		local, remote, ok := strings.Cut(v, ":")
		if !ok {
			remote = filepath.Base(local)
		}
		if local == "" || remote == "" {
			return nil, fmt.Errorf("--file %q: want LOCAL:REMOTE (a local path and a path in the workspace)", v)
		}
		remote = filepath.ToSlash(remote)
		if msg := job.CheckFilePath(remote); msg != "" {
			return nil, fmt.Errorf("--file %q: %s %s", v, remote, msg)
		}
		info, err := os.Stat(local)
		if err != nil {
			return nil, fmt.Errorf("--file %q: %w", v, err)
		}
		if info.Mode().IsRegular() {
			out = append(out, localFile{local: local, remote: remote, info: info})
			continue
		}
		if !info.IsDir() {
			return nil, fmt.Errorf("--file %q: %s is neither a regular file nor a directory", v, local)
		}
		err = filepath.WalkDir(local, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !d.Type().IsRegular() {
				return nil // links and special files are not job files
			}
			rel, err := filepath.Rel(local, p)
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			out = append(out, localFile{local: p, remote: path.Join(remote, filepath.ToSlash(rel)), info: info})
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("--file %q: %w", v, err)
		}
	}
	return out, nil
}

// uploadFiles uploads files the coordinator lacks and adds them to spec.
func uploadFiles(ctx context.Context, c *api.Client, spec *job.Spec, files []localFile, progress io.Writer) error {
	if len(files) > 0 && spec.Files == nil {
		spec.Files = make(map[string]job.File, len(files))
	}
	for _, f := range files {
		if _, ok := spec.Files[f.remote]; ok {
			return exitf(exitUsage, "files[%q] is given twice (by the spec or another --file)", f.remote)
		}
		digest, err := fileDigest(f.local)
		if err != nil {
			return exitf(exitUsage, "%v", err)
		}
		have, err := c.HasFile(ctx, digest)
		if err != nil {
			return apiExit("uploading "+f.local, err)
		}
		if !have {
			if err := uploadOne(ctx, c, f, digest); err != nil {
				return apiExit("uploading "+f.local, err)
			}
			fmt.Fprintf(progress, "uploaded %s (%s) as %s\n", f.local, job.ByteSize(f.info.Size()), f.remote)
		}
		spec.Files[f.remote] = job.File{Blob: digest, Mode: job.FileMode(f.info.Mode().Perm()), ModTime: f.info.ModTime().UTC()}
	}
	return nil
}

func uploadOne(ctx context.Context, c *api.Client, f localFile, digest string) error {
	r, err := os.Open(f.local)
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = c.UploadFile(ctx, digest, r, f.info.Size())
	return err
}

func fileDigest(name string) (string, error) {
	r, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", fmt.Errorf("reading %s: %w", name, err)
	}
	return job.BlobPrefix + hex.EncodeToString(h.Sum(nil)), nil
}
