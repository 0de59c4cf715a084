// Package dirstore is the default blobstore.Store: blobs as files in a local
// directory. It suits a single coordinator; replicas that share blobs need a
// shared store.
//
// # Layout
//
// Inside the store's directory:
//
//	blobs/<key>.blob   one file per blob: "jobs/42/a.tar.gz" is blobs/jobs/42/a.tar.gz.blob
//	tmp/               blobs being written
//
// The ".blob" suffix keeps blob "a" (file a.blob) apart from the directory "a"
// that holds blob "a/b"; blobstore.CheckKey forbids a directory segment ending
// in ".blob", so the two can never collide.
//
// A blob file is a 64-byte header followed by the content. The header holds a
// magic string, the content's size, its SHA-256 and the creation time, so one
// file (one rename) carries a blob and everything Info says about it:
//
//	0  8  magic "airblob1"
//	8  8  size, big-endian
//	16 8  created, Unix nanoseconds, big-endian
//	24 32 SHA-256 of the content
//	56 8  zero
//
// # Atomicity
//
// Put writes the header's space, streams the content into tmp/ while hashing
// it, writes the header, fsyncs, renames the file into blobs/ and fsyncs the
// directory. A reader therefore sees the old blob or the new one, never a
// part, and a crash leaves at most a file in tmp/, which Open removes once it
// has not been written for an hour (so a slow upload of another process
// sharing the directory is left alone).
//
// # Confinement
//
// Every file operation goes through an os.Root opened on the store's
// directory: a symbolic link planted inside it cannot lead outside it. List
// and DeletePrefix walk only real directories and regular files (a link is
// neither), Delete removes only regular files, and Get and Stat refuse
// anything but a regular blob file.
package dirstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/airlock-run/airlock/internal/blobstore"
)

var _ blobstore.Store = (*Store)(nil)

const (
	blobsDir   = "blobs"
	tmpDir     = "tmp"
	suffix     = blobstore.ReservedSuffix
	magic      = "airblob1"
	headerSize = 64
	// staleTemp is how long a temporary file must have gone unwritten
	// before Open removes it.
	staleTemp = time.Hour
)

// Options configure a Store. The zero value is ready to use.
type Options struct {
	// Now is the clock for Info.Created; time.Now if nil.
	Now func() time.Time
}

// Store is a blobstore.Store in a local directory. Safe for concurrent use.
type Store struct {
	root *os.Root
	now  func() time.Time
}

// Open opens the store in dir, creating dir (mode 0700) if needed, and
// removes temporary files that crashed writers left behind.
func Open(dir string, opts Options) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("opening blob store: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening blob store: %w", err)
	}
	s := &Store{root: root, now: opts.Now}
	if s.now == nil {
		s.now = time.Now
	}
	for _, d := range []string{blobsDir, tmpDir} {
		if err := root.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			root.Close()
			return nil, fmt.Errorf("opening blob store %s: %w", dir, err)
		}
	}
	if err := s.removeStaleTemps(); err != nil {
		root.Close()
		return nil, fmt.Errorf("opening blob store %s: %w", dir, err)
	}
	return s, nil
}

// Close releases the store's directory.
func (s *Store) Close() error { return s.root.Close() }

func (s *Store) removeStaleTemps() error {
	ents, err := readDir(s.root, tmpDir)
	if err != nil {
		return err
	}
	// File times come from the real clock, so this compares with it too.
	cutoff := time.Now().Add(-staleTemp)
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.ModTime().Before(cutoff) {
			continue
		}
		if err := s.root.Remove(tmpDir + "/" + e.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// blobPath is where key's blob lives, relative to the root.
func blobPath(key string) string { return blobsDir + "/" + key + suffix }

// Put implements blobstore.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, limit int64) (blobstore.Info, error) {
	if err := blobstore.CheckKey(key); err != nil {
		return blobstore.Info{}, err
	}
	if limit < 0 {
		return blobstore.Info{}, fmt.Errorf("storing blob %q: negative limit %d", key, limit)
	}
	info, err := s.put(ctx, key, r, limit)
	if err != nil {
		return blobstore.Info{}, fmt.Errorf("storing blob %q: %w", key, err)
	}
	return info, nil
}

func (s *Store) put(ctx context.Context, key string, r io.Reader, limit int64) (blobstore.Info, error) {
	if err := ctx.Err(); err != nil {
		return blobstore.Info{}, err
	}
	tmp := tmpDir + "/" + rand.Text()
	f, err := s.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return blobstore.Info{}, err
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			s.root.Remove(tmp)
		}
	}()

	if _, err := f.Write(make([]byte, headerSize)); err != nil {
		return blobstore.Info{}, err
	}
	h := sha256.New()
	src := io.Reader(ctxReader{ctx, r})
	if limit > 0 {
		src = io.LimitReader(src, limit+1)
	}
	n, err := io.Copy(io.MultiWriter(f, h), src)
	if err != nil {
		return blobstore.Info{}, err
	}
	if limit > 0 && n > limit {
		return blobstore.Info{}, fmt.Errorf("%w of %d bytes", blobstore.ErrTooLarge, limit)
	}

	info := blobstore.Info{Key: key, Size: n, SHA256: hex.EncodeToString(h.Sum(nil)), Created: s.now().UTC()}
	if _, err := f.WriteAt(encodeHeader(info), 0); err != nil {
		return blobstore.Info{}, err
	}
	if err := f.Sync(); err != nil {
		return blobstore.Info{}, err
	}
	if err := f.Close(); err != nil {
		return blobstore.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return blobstore.Info{}, err
	}

	dst := blobPath(key)
	dir := parent(dst)
	// A concurrent Delete prunes directories it empties, and may do so to
	// one that MkdirAll has just made, even before Rename; make them again
	// then.
	for try := 0; ; try++ {
		err := s.root.MkdirAll(dir, 0o700)
		if err == nil {
			err = s.root.Rename(tmp, dst)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || try == 10 {
			return blobstore.Info{}, err
		}
	}
	committed = true
	// A Delete that came right after the rename may have pruned dir: then
	// there is nothing to sync.
	if err := syncDir(s.root, dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return blobstore.Info{}, err
	}
	return info, nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Get implements blobstore.Store.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, blobstore.Info, error) {
	f, info, err := s.open(ctx, key)
	if err != nil {
		return nil, blobstore.Info{}, err
	}
	return &blobReader{
		r:    io.NewSectionReader(f, headerSize, info.Size),
		f:    f,
		h:    sha256.New(),
		info: info,
	}, info, nil
}

// Stat implements blobstore.Store.
func (s *Store) Stat(ctx context.Context, key string) (blobstore.Info, error) {
	f, info, err := s.open(ctx, key)
	if err != nil {
		return blobstore.Info{}, err
	}
	f.Close()
	return info, nil
}

// Touch implements blobstore.Store: it rewrites the creation time in the
// blob file's header, in place (an 8-byte write; readers of the content
// never look at it).
func (s *Store) Touch(ctx context.Context, key string) (blobstore.Info, error) {
	if err := blobstore.CheckKey(key); err != nil {
		return blobstore.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return blobstore.Info{}, fmt.Errorf("touching blob %q: %w", key, err)
	}
	f, err := s.root.OpenFile(blobPath(key), os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return blobstore.Info{}, fmt.Errorf("touching blob %q: %w", key, blobstore.ErrNotFound)
		}
		return blobstore.Info{}, fmt.Errorf("touching blob %q: %w", key, err)
	}
	defer f.Close()
	info, err := readHeader(f, key)
	if err != nil {
		return blobstore.Info{}, fmt.Errorf("touching blob %q: %w", key, err)
	}
	info.Created = s.now().UTC()
	if _, err := f.WriteAt(encodeHeader(info)[16:24], 16); err != nil {
		return blobstore.Info{}, fmt.Errorf("touching blob %q: %w", key, err)
	}
	return info, nil
}

// open opens key's blob file and reads its header.
func (s *Store) open(ctx context.Context, key string) (*os.File, blobstore.Info, error) {
	if err := blobstore.CheckKey(key); err != nil {
		return nil, blobstore.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return nil, blobstore.Info{}, fmt.Errorf("opening blob %q: %w", key, err)
	}
	f, err := s.root.Open(blobPath(key))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil, blobstore.Info{}, fmt.Errorf("opening blob %q: %w", key, blobstore.ErrNotFound)
		}
		return nil, blobstore.Info{}, fmt.Errorf("opening blob %q: %w", key, err)
	}
	info, err := readHeader(f, key)
	if err != nil {
		f.Close()
		return nil, blobstore.Info{}, fmt.Errorf("opening blob %q: %w", key, err)
	}
	return f, info, nil
}

func readHeader(f *os.File, key string) (blobstore.Info, error) {
	fi, err := f.Stat()
	if err != nil {
		return blobstore.Info{}, err
	}
	if !fi.Mode().IsRegular() {
		return blobstore.Info{}, fmt.Errorf("%s is not a regular file", fi.Mode().Type())
	}
	var hdr [headerSize]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return blobstore.Info{}, fmt.Errorf("reading header: %w", err)
	}
	if string(hdr[:8]) != magic {
		return blobstore.Info{}, errors.New("not a blob file (bad magic)")
	}
	size := int64(binary.BigEndian.Uint64(hdr[8:16]))
	if size != fi.Size()-headerSize {
		return blobstore.Info{}, fmt.Errorf("corrupt: header says %d bytes, file holds %d", size, fi.Size()-headerSize)
	}
	return blobstore.Info{
		Key:     key,
		Size:    size,
		SHA256:  hex.EncodeToString(hdr[24:56]),
		Created: time.Unix(0, int64(binary.BigEndian.Uint64(hdr[16:24]))).UTC(),
	}, nil
}

func encodeHeader(info blobstore.Info) []byte {
	hdr := make([]byte, headerSize)
	copy(hdr, magic)
	binary.BigEndian.PutUint64(hdr[8:16], uint64(info.Size))
	binary.BigEndian.PutUint64(hdr[16:24], uint64(info.Created.UnixNano()))
	sum, _ := hex.DecodeString(info.SHA256)
	copy(hdr[24:56], sum)
	return hdr
}

// blobReader reads a blob's content and, at its end, checks it against the
// SHA-256 in the header, so a file damaged on disk is an error, not data.
type blobReader struct {
	r    io.Reader
	f    *os.File
	h    hash.Hash
	info blobstore.Info
}

func (b *blobReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.h.Write(p[:n])
	if err == io.EOF {
		if got := hex.EncodeToString(b.h.Sum(nil)); got != b.info.SHA256 {
			return n, fmt.Errorf("reading blob %q: corrupt: content has SHA-256 %s, stored %s", b.info.Key, got, b.info.SHA256)
		}
	}
	return n, err
}

func (b *blobReader) Close() error { return b.f.Close() }

// Delete implements blobstore.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := blobstore.CheckKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("deleting blob %q: %w", key, err)
	}
	if _, err := s.remove(blobPath(key)); err != nil {
		return fmt.Errorf("deleting blob %q: %w", key, err)
	}
	return nil
}

// remove removes one blob file, if there, and then its directories as long
// as they are empty. It reports whether it removed the file.
func (s *Store) remove(p string) (bool, error) {
	fi, err := s.root.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return false, nil
	case err != nil:
		return false, err
	case !fi.Mode().IsRegular():
		return false, fmt.Errorf("%s is not a regular file", fi.Mode().Type())
	}
	if err := s.root.Remove(p); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	for dir := parent(p); dir != blobsDir; dir = parent(dir) {
		// Fails once a directory is not empty (or a Put has just made it
		// again), which ends the pruning.
		if s.root.Remove(dir) != nil {
			break
		}
	}
	return true, nil
}

// List implements blobstore.Store.
func (s *Store) List(ctx context.Context, p blobstore.ListParams) (blobstore.ListPage, error) {
	if err := blobstore.CheckPrefix(p.Prefix); err != nil {
		return blobstore.ListPage{}, err
	}
	limit := p.Limit
	if limit <= 0 {
		limit = blobstore.DefaultListLimit
	}
	var page blobstore.ListPage
	more := false
	err := s.walk(ctx, p.Prefix, p.After, func(key, file string) (bool, error) {
		if len(page.Blobs) == limit {
			more = true
			return true, nil
		}
		info, err := s.stat(file, key)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil // deleted since the directory was read
		}
		if err != nil {
			return false, err
		}
		page.Blobs = append(page.Blobs, info)
		return false, nil
	})
	if err != nil {
		return blobstore.ListPage{}, fmt.Errorf("listing blobs %q: %w", p.Prefix, err)
	}
	if more {
		page.Next = page.Blobs[len(page.Blobs)-1].Key
	}
	return page, nil
}

// stat reads the header of the blob file at p.
func (s *Store) stat(p, key string) (blobstore.Info, error) {
	f, err := s.root.Open(p)
	if err != nil {
		return blobstore.Info{}, err
	}
	defer f.Close()
	info, err := readHeader(f, key)
	if err != nil {
		return blobstore.Info{}, fmt.Errorf("blob %q: %w", key, err)
	}
	return info, nil
}

// DeletePrefix implements blobstore.Store.
func (s *Store) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	if err := blobstore.CheckPrefix(prefix); err != nil {
		return 0, err
	}
	var files []string
	err := s.walk(ctx, prefix, "", func(_, file string) (bool, error) {
		files = append(files, file)
		return false, nil
	})
	if err != nil {
		return 0, fmt.Errorf("deleting blobs %q: %w", prefix, err)
	}
	n := 0
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return n, fmt.Errorf("deleting blobs %q: %w", prefix, err)
		}
		removed, err := s.remove(f)
		if err != nil {
			return n, fmt.Errorf("deleting blobs %q: %w", prefix, err)
		}
		if removed {
			n++
		}
	}
	return n, nil
}

// walk calls fn, in ascending key order, with the key and file of every blob
// whose key begins with prefix and sorts after after, until fn says stop. It
// never follows a symbolic link and skips files that are not blobs.
func (s *Store) walk(ctx context.Context, prefix, after string, fn func(key, file string) (stop bool, err error)) error {
	base := prefix[:strings.LastIndex(prefix, "/")+1] // "" or "jobs/42/"
	dir := strings.TrimSuffix(blobsDir+"/"+base, "/")
	_, err := s.walkDir(ctx, dir, base, prefix, after, fn)
	return err
}

// walkDir walks the directory dir, which holds the keys beginning with base.
func (s *Store) walkDir(ctx context.Context, dir, base, prefix, after string, fn func(key, file string) (bool, error)) (bool, error) {
	if err := ctx.Err(); err != nil {
		return true, err
	}
	ents, err := readDir(s.root, dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	// Order the entries by the keys they hold: directory "a" holds keys
	// beginning with "a/", file "a.blob" holds key "a".
	type entry struct {
		name, key string
		dir       bool
	}
	var list []entry
	for _, e := range ents {
		switch name := e.Name(); {
		case e.IsDir():
			list = append(list, entry{name, base + name + "/", true})
		case e.Type().IsRegular() && strings.HasSuffix(name, suffix):
			list = append(list, entry{name, base + strings.TrimSuffix(name, suffix), false})
		}
	}
	slices.SortFunc(list, func(a, b entry) int { return strings.Compare(a.key, b.key) })
	for _, e := range list {
		if e.dir {
			if !strings.HasPrefix(e.key, prefix) && !strings.HasPrefix(prefix, e.key) {
				continue
			}
			if after >= e.key && !strings.HasPrefix(after, e.key) {
				continue // every key in it sorts before after
			}
			if stop, err := s.walkDir(ctx, dir+"/"+e.name, e.key, prefix, after, fn); stop || err != nil {
				return true, err
			}
			continue
		}
		if !strings.HasPrefix(e.key, prefix) || e.key <= after || blobstore.CheckKey(e.key) != nil {
			continue
		}
		if stop, err := fn(e.key, dir+"/"+e.name); stop || err != nil {
			return true, err
		}
	}
	return false, nil
}

// readDir lists a directory of the root.
func readDir(root *os.Root, dir string) ([]fs.DirEntry, error) {
	f, err := root.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadDir(-1)
}

// syncDir fsyncs a directory so that a rename into it survives a crash.
func syncDir(root *os.Root, dir string) error {
	f, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func parent(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return "."
}
