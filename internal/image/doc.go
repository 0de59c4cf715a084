// Package image gets the images that job steps run in: it resolves a
// reference to a digest, fetches the image once into a content-addressed
// cache shared by all jobs of an executor, unpacks its layers safely, and
// stacks them under a per-job copy-on-write layer (overlayfs).
//
// # References
//
// A step names its image in one of these forms:
//
//	registry.example.com/team/tool:1.2       a registry image by tag
//	registry.example.com/team/tool@sha256:…  a registry image by digest (a tag before @ is ignored)
//	busybox                                  Docker Hub shorthand (index.docker.io/library/busybox:latest)
//	oci-layout:/srv/images/tool              an OCI image layout directory holding one image
//	oci-layout:/srv/images/tool:1.2          … the manifest annotated org.opencontainers.image.ref.name=1.2
//	oci-layout:/srv/images/tool@sha256:…     … the manifest (or index) with that digest
//	docker-archive:/srv/images/tool.tar      a `docker save` tarball holding one image
//	docker-archive:/srv/images/tool.tar:tool:1.2  … the image saved as tool:1.2
//
// A local path must be absolute and may not contain ':' or '@'; it must lie
// inside one of Options.LocalRoots (after resolving symlinks), so a job
// cannot turn an arbitrary host file into an image. Local sources are
// refused when LocalRoots is empty.
//
// Registry images are fetched with go-containerregistry: credentials come from
// the job (Auth) or else from the Docker config file named by
// Options.DockerConfig (with its credential helpers); Options.Mirrors are
// tried before the registry itself; an image index is resolved to the
// manifest for Options.Platform.
//
// # Digests
//
// Image.Digest is what the reference resolved to and what a job records:
// the manifest or index digest for registry and OCI-layout images (so
// `repo@digest` pulls the same image again), and the image ID (config
// digest) for docker-archive tarballs, which carry no manifest digest.
// Image.ManifestDigest is the platform's manifest digest and Image.ID the
// config digest. A tag is looked up in the registry on every Get unless
// Options.TagTTL allows reusing a recent answer; a digest found in the cache
// costs no request at all.
//
// # Cache layout and design
//
// Layers are unpacked one directory per layer, named by the layer's diff ID
// (the digest of its uncompressed tar), and an image is a small record
// listing its layers bottom first. A job's root file system is an overlayfs
// whose lower directories are those layer directories and whose upper
// directory is the job's own (see Mount). This is the design of
// containerd's and Docker's overlay drivers: images that share base layers
// share them on disk, a cache hit copies nothing, and nothing a job does
// reaches the cache, because overlayfs never writes to lower directories.
// Whiteouts are therefore stored the way overlayfs reads them: a `.wh.NAME`
// entry becomes a 0/0 character device NAME, and an opaque-directory marker
// becomes the trusted.overlay.opaque xattr (user.overlay.opaque when not
// root). Each layer is unpacked from its verified tar independently of the
// layers below it, so a hard link must point into its own layer (true of
// what docker and buildkit produce) and a directory created only implicitly
// (a file whose parent has no entry) gets mode 0755 owned by the executor.
//
// Root/
//
//	layers/sha256/HEX/      one unpacked layer, by diff ID (an overlay lower dir)
//	images/sha256/HEX.json  one image record, by Image.Digest; its mtime is the last use
//	empty/                  the lower dir of an image without layers
//	tmp/                    unpacks in progress and evicted layers being removed
//	lock                    held (flock) by the one Cache using Root
//
// Every fetch is verified: the registry client checks manifests and blobs
// against their digests, and the unpacker hashes each uncompressed layer and
// compares it with the diff ID of the (verified) config before the layer
// enters the cache. Concurrent Gets of one image share one fetch, and
// concurrent fetches of images sharing a layer unpack it once. Options.MaxBytes
// bounds the disk used by unpacked layers: when over, the least recently used
// images that no one holds are evicted with the layers no other image uses.
// An Image holds a lease until Release; leased images are never evicted.
//
// The cache is shared by every job of an executor. A digest that one job
// pulled with its credentials is served to any later job naming that digest
// without asking the registry; a tag is resolved with the asking job's
// credentials (and a TagTTL answer is only reused for the same credentials).
//
// # Unpacking
//
// Layers are extracted with openat-style calls relative to directory file
// descriptors opened with O_NOFOLLOW: no symlink is ever followed, and an
// entry whose path is absolute, contains "..", or passes through a symlink or
// a non-directory is refused, as is a hard link to a path outside the layer.
// Modes including setuid/setgid/sticky bits, modification times, and the
// user.* and security.capability xattrs are kept; ownership and device nodes
// only when running as root (otherwise device nodes are skipped and logged).
// Xattrs in the trusted.* namespace, and user.overlay.*, are never copied
// from an image, so a layer cannot steer overlayfs.
package image
