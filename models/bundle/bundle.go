package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// Names of the bundle's fixed members.
const (
	manifestFile  = "manifest.json"
	modelFile     = "model.onnx"
	signatureFile = "signature"
)

// MaxBundleSize bounds what ReadBundle reads (all members together).
const MaxBundleSize = 2 << 30

// Bundle is a verified model bundle: the manifest, the ONNX model and the golden files,
// read from a tar whose signature a trusted key made and whose files match the manifest's
// sha256 sums.
type Bundle struct {
	Manifest *Manifest
	// ManifestJSON is the signed manifest, byte for byte.
	ManifestJSON []byte
	ONNX         []byte
	// Files holds every member but manifest.json, model.onnx and signature (golden/...).
	Files map[string][]byte
	// KeyID is the id of the key that signed the bundle (KeyID of its public key).
	KeyID string
}

// SHA256 is the hex sha256 of the model, as ModelInfo.SHA256 reports it.
func (b *Bundle) SHA256() string { return b.Manifest.Files[modelFile] }

// signatureDoc is the bundle's signature member.
type signatureDoc struct {
	Algorithm string `json:"algorithm"` // "ed25519"
	KeyID     string `json:"key_id"`
	Signature string `json:"signature"` // base64 (std) of the ed25519 signature of manifest.json
}

// KeyID names a public key: the first 16 hex digits of the sha256 of its 32 bytes.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// TrustedKeys are the public keys a station accepts bundles from, by KeyID.
type TrustedKeys map[string]ed25519.PublicKey

// Add trusts pub.
func (k TrustedKeys) Add(pub ed25519.PublicKey) { k[KeyID(pub)] = pub }

// LoadTrustedKeys reads PEM public key files (as WriteKeyPair writes KEYFILE.pub).
func LoadTrustedKeys(paths ...string) (TrustedKeys, error) {
	keys := TrustedKeys{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("trusted key: %w", err)
		}
		pub, err := ParsePublicKey(data)
		if err != nil {
			return nil, fmt.Errorf("trusted key %s: %w", p, err)
		}
		keys.Add(pub)
	}
	return keys, nil
}

// ParsePublicKey reads a PEM "PUBLIC KEY" (PKIX) holding an ed25519 key.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("not a PEM PUBLIC KEY")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%T key, want ed25519", k)
	}
	return pub, nil
}

// ParsePrivateKey reads a PEM "PRIVATE KEY" (PKCS #8) holding an ed25519 key.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM PRIVATE KEY")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%T key, want ed25519", k)
	}
	return priv, nil
}

// ReadPrivateKey reads a private key file written by WriteKeyPair.
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return k, nil
}

// WriteKeyPair makes a new ed25519 key pair and writes the private key to path (PEM
// PKCS #8, mode 0600) and the public key to path+".pub" (PEM PKIX, mode 0644). It refuses to
// overwrite either file.
func WriteKeyPair(path string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	for _, p := range []string{path, path + ".pub"} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("keygen: %s exists; not overwriting a key", p)
		}
	}
	if err := writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(path+".pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		os.Remove(path)
		return nil, err
	}
	return pub, nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("keygen: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("keygen: %w", err)
	}
	return f.Close()
}

// BuildBundle fills m.Files with the sha256 of onnx (as model.onnx) and of every extra file
// (paths such as golden/001.png), validates m against the model, signs it with key and
// writes the tar to w: manifest.json, model.onnx, the extra files in name order, signature.
func BuildBundle(w io.Writer, m Manifest, onnx []byte, files map[string][]byte, key ed25519.PrivateKey) error {
	m.Files = map[string]string{modelFile: SHA256Hex(onnx)}
	for name, data := range files {
		if name == modelFile || name == manifestFile || name == signatureFile {
			return fmt.Errorf("bundle: extra file %q has a reserved name", name)
		}
		m.Files[name] = SHA256Hex(data)
	}
	if m.Format == "" {
		m.Format = BundleFormat
	}
	if err := m.Validate(); err != nil {
		return err
	}
	h, err := InspectModel(onnx)
	if err != nil {
		return fmt.Errorf("bundle: model.onnx: %w", err)
	}
	if _, err := ManifestSpec(h, &m); err != nil {
		return fmt.Errorf("bundle: model.onnx does not match the manifest: %w", err)
	}
	manifest, err := json.MarshalIndent(&m, "", "  ")
	if err != nil {
		return err
	}
	manifest = append(manifest, '\n')
	sig, err := SignManifest(manifest, key)
	if err != nil {
		return err
	}
	members := make(map[string][]byte, len(files)+1)
	for name, data := range files {
		members[name] = data
	}
	members[modelFile] = onnx
	if err := WriteSignedTar(w, manifest, members, sig); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	return nil
}

// WriteBundleFile is BuildBundle into a file, written atomically (temp file, fsync, rename).
func WriteBundleFile(path string, m Manifest, onnx []byte, files map[string][]byte, key ed25519.PrivateKey) error {
	var buf bytes.Buffer
	if err := BuildBundle(&buf, m, onnx, files, key); err != nil {
		return err
	}
	return WriteFileAtomic(path, buf.Bytes())
}

func SHA256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// OpenBundle reads and verifies the bundle file at path; see ReadBundle.
func OpenBundle(path string, keys TrustedKeys) (*Bundle, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	defer f.Close()
	b, err := ReadBundle(f, keys)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	return b, nil
}

// ReadBundle reads a bundle tar and verifies it, in this order: the tar is complete and
// holds only regular files with clean, unique paths; the signature is an ed25519 signature
// of manifest.json by one of keys; the manifest is well-formed; every member is listed in
// the manifest with its sha256 and every listed file is present; model.onnx is an ONNX
// model whose opset, input and outputs agree with the manifest. Errors wrap ErrBadSignature
// (unsigned, untrusted key, wrong signature) or ErrBadBundle (anything else), plus
// ErrInvalidModel or ErrUnsupportedModel for the model itself.
func ReadBundle(r io.Reader, keys TrustedKeys) (*Bundle, error) {
	return readBundle(r, keys, true)
}

// InspectBundle reads the bundle file at path like OpenBundle but does NOT verify its
// signature (KeyID is the key it claims, "" when unsigned): for display only, never to
// load a model on a station.
func InspectBundle(path string) (*Bundle, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	defer f.Close()
	b, err := readBundle(f, nil, false)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	return b, nil
}

func readBundle(r io.Reader, keys TrustedKeys, verify bool) (*Bundle, error) {
	members, err := readTar(r)
	if err != nil {
		return nil, err
	}
	manifest, ok := members[manifestFile]
	if !ok {
		return nil, fmt.Errorf("%w: no %s (is this a model bundle?)", ErrBadBundle, manifestFile)
	}
	sig, ok := members[signatureFile]
	var keyID string
	switch {
	case !ok && verify:
		return nil, fmt.Errorf("%w: unsigned: no %s member", ErrBadSignature, signatureFile)
	case verify:
		if keyID, err = verifySignature(manifest, sig, keys); err != nil {
			return nil, err
		}
	case ok:
		var doc signatureDoc
		if json.Unmarshal(sig, &doc) == nil {
			keyID = doc.KeyID
		}
	}
	m, err := ParseManifest(manifest)
	if err != nil {
		return nil, err
	}
	b := &Bundle{Manifest: m, ManifestJSON: manifest, KeyID: keyID, Files: map[string][]byte{}}
	for name, data := range members {
		if name == manifestFile || name == signatureFile {
			continue
		}
		want, listed := m.Files[name]
		if !listed {
			return nil, fmt.Errorf("%w: %s is in the bundle but not listed in the manifest", ErrBadBundle, name)
		}
		if got := SHA256Hex(data); got != want {
			return nil, fmt.Errorf("%w: %s: sha256 %s, manifest says %s", ErrBadBundle, name, got, want)
		}
		if name == modelFile {
			b.ONNX = data
		} else {
			b.Files[name] = data
		}
	}
	for name := range m.Files {
		if _, ok := members[name]; !ok {
			return nil, fmt.Errorf("%w: %s is listed in the manifest but missing from the bundle", ErrBadBundle, name)
		}
	}
	h, err := InspectModel(b.ONNX)
	if err != nil {
		return nil, fmt.Errorf("model.onnx: %w", err)
	}
	if _, err := ManifestSpec(h, m); err != nil {
		return nil, fmt.Errorf("model.onnx: %w", err)
	}
	return b, nil
}

func verifySignature(manifest, sig []byte, keys TrustedKeys) (string, error) {
	var doc signatureDoc
	dec := json.NewDecoder(bytes.NewReader(sig))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return "", fmt.Errorf("%w: signature member: %v", ErrBadSignature, err)
	}
	if doc.Algorithm != "ed25519" {
		return "", fmt.Errorf("%w: algorithm %q, want ed25519", ErrBadSignature, doc.Algorithm)
	}
	raw, err := base64.StdEncoding.DecodeString(doc.Signature)
	if err != nil || len(raw) != ed25519.SignatureSize {
		return "", fmt.Errorf("%w: signature is not %d bytes of base64", ErrBadSignature, ed25519.SignatureSize)
	}
	pub, ok := keys[doc.KeyID]
	if !ok {
		ids := make([]string, 0, len(keys))
		for id := range keys {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return "", fmt.Errorf("%w: signed by key %s, which is not trusted (trusted: %s)", ErrBadSignature, doc.KeyID, strings.Join(ids, ", "))
	}
	if !ed25519.Verify(pub, manifest, raw) {
		return "", fmt.Errorf("%w: signature does not match manifest.json (key %s): tampered or re-signed", ErrBadSignature, doc.KeyID)
	}
	return doc.KeyID, nil
}

// readTar reads every member of a tar, strictly.
func readTar(r io.Reader) (map[string][]byte, error) {
	lr := &io.LimitedReader{R: r, N: MaxBundleSize + 1}
	zr := &zeroTail{r: lr}
	tr := tar.NewReader(zr)
	members := map[string][]byte{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if len(members) == 0 && !errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("%w: not a tar archive: %v", ErrBadBundle, err)
			}
			return nil, fmt.Errorf("%w: truncated or corrupt tar: %v", ErrBadBundle, err)
		}
		if hdr.Typeflag == tar.TypeDir && strings.HasSuffix(hdr.Name, "/") {
			if err := checkBundlePath(strings.TrimSuffix(hdr.Name, "/")); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadBundle, err)
			}
			continue
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("%w: member %q is not a regular file (type %q)", ErrBadBundle, hdr.Name, hdr.Typeflag)
		}
		if err := checkBundlePath(hdr.Name); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadBundle, err)
		}
		if _, dup := members[hdr.Name]; dup {
			return nil, fmt.Errorf("%w: member %q appears twice", ErrBadBundle, hdr.Name)
		}
		if hdr.Size > MaxBundleSize {
			return nil, fmt.Errorf("%w: member %q is %d bytes, more than %d", ErrBadBundle, hdr.Name, hdr.Size, MaxBundleSize)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("%w: truncated or corrupt tar: member %q: %v", ErrBadBundle, hdr.Name, err)
		}
		members[hdr.Name] = data
	}
	if lr.N <= 0 {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadBundle, MaxBundleSize)
	}
	if len(members) == 0 {
		return nil, fmt.Errorf("%w: empty archive", ErrBadBundle)
	}
	if zr.zeros < 1024 {
		// archive/tar takes a clean end of input at a header as the end of the archive.
		return nil, fmt.Errorf("%w: truncated tar: it ends without its end-of-archive marker", ErrBadBundle)
	}
	return members, nil
}

// zeroTail counts the zero bytes at the end of what was read: a complete tar ends with two
// zero blocks (1024 bytes).
type zeroTail struct {
	r     io.Reader
	zeros int
}

func (z *zeroTail) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
	i := n - 1
	for i >= 0 && p[i] == 0 {
		i--
	}
	if i < 0 {
		z.zeros += n
	} else {
		z.zeros = n - 1 - i
	}
	return n, err
}

// WriteFileAtomic writes data to path: temp file in the same folder, fsync, rename, fsync
// of the folder.
func WriteFileAtomic(path string, data []byte) error {
	return writeFileAtomic(path, data, 0o644, nil)
}

// WriteFileAtomicLike is WriteFileAtomic giving the new file like's mode and, where the
// process may (root, or its own uid), its owner: a config file replaced by an updater keeps
// root:takt 0640.
func WriteFileAtomicLike(path string, data []byte, like os.FileInfo) error {
	var chown func(string) error
	if st, ok := like.Sys().(*syscall.Stat_t); ok {
		chown = func(p string) error {
			err := os.Chown(p, int(st.Uid), int(st.Gid))
			if err != nil && int(st.Uid) == os.Getuid() {
				return nil // not root: the file is ours already; a foreign group is not ours to give
			}
			return err
		}
	}
	return writeFileAtomic(path, data, like.Mode().Perm(), chown)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode, chown func(string) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Chmod(tmp.Name(), mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if chown != nil {
		if err = chown(tmp.Name()); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
