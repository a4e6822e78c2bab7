package bundle

import (
	"archive/tar"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"io"
	"slices"
	"strings"
)

// SignManifest returns the "signature" member a bundle carries for manifest: the same
// ed25519 signature document BuildBundle writes (algorithm, key id, base64 signature of the
// manifest bytes). Other signed artifacts (agent releases in package firmware) use it so
// that stations trust one kind of signature and one set of keys.
func SignManifest(manifest []byte, key ed25519.PrivateKey) ([]byte, error) {
	sig, err := json.Marshal(signatureDoc{Algorithm: "ed25519", KeyID: KeyID(key.Public().(ed25519.PublicKey)),
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, manifest))})
	if err != nil {
		return nil, err
	}
	return append(sig, '\n'), nil
}

// VerifyManifest checks that sig (a signature member as SignManifest writes it) is an
// ed25519 signature of manifest by one of keys, and returns that key's id. Errors wrap
// ErrBadSignature.
func VerifyManifest(manifest, sig []byte, keys TrustedKeys) (keyID string, err error) {
	return verifySignature(manifest, sig, keys)
}

// SignatureKeyID returns the key id a signature member claims, without verifying it
// ("" when sig is not a signature document): for display only.
func SignatureKeyID(sig []byte) string {
	var doc signatureDoc
	if json.Unmarshal(sig, &doc) != nil {
		return ""
	}
	return doc.KeyID
}

// ReadTarMembers reads every member of a tar as ReadBundle does, strictly: regular files
// with clean, unique relative paths, at most MaxBundleSize bytes in all, with its
// end-of-archive marker. Errors wrap ErrBadBundle.
func ReadTarMembers(r io.Reader) (map[string][]byte, error) {
	return readTar(r)
}

// WriteSignedTar writes a signed archive as bundles and agent releases are laid out:
// manifest.json first, then files in name order, then the signature member (skipped when
// sig is nil). Members under bin/ are executable.
func WriteSignedTar(w io.Writer, manifest []byte, files map[string][]byte, sig []byte) error {
	tw := tar.NewWriter(w)
	add := func(name string, data []byte) error {
		mode := int64(0o644)
		if strings.HasPrefix(name, "bin/") {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add(manifestFile, manifest); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := add(name, files[name]); err != nil {
			return err
		}
	}
	if sig != nil {
		if err := add(signatureFile, sig); err != nil {
			return err
		}
	}
	return tw.Close()
}
