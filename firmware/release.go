package firmware

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/takt-edge/takt/models/bundle"
)

// ReleaseFormat is the manifest "format" of agent releases.
const ReleaseFormat = "takt-release/1"

// Members of a release with a fixed meaning.
const (
	ManifestFile  = "manifest.json"
	SignatureFile = "signature"
	AgentFile     = "bin/takt-agent"
	ConfigFile    = "etc/agent.yaml"
)

// Errors a caller branches on.
var (
	// ErrBadRelease: the release is malformed, tampered (a sha256 does not match), for
	// another architecture, or not allowed over the running version.
	ErrBadRelease = errors.New("bad agent release")
	// ErrDowngrade: the release's version is not above the committed one and it is not
	// signed as a rollback. It wraps ErrBadRelease.
	ErrDowngrade = fmt.Errorf("%w: downgrade", ErrBadRelease)
	// ErrRolledBack: the new agent did not become healthy in time; the previous slot runs again.
	ErrRolledBack = errors.New("update rolled back")
)

// Signature errors wrap bundle.ErrBadSignature.

// ReleaseManifest describes an agent release; it is what the signature signs.
type ReleaseManifest struct {
	Format  string `json:"format"`  // ReleaseFormat
	Version string `json:"version"` // semantic version of the agent
	// Arch is the GOARCH of bin/takt-agent (amd64, arm64).
	Arch string `json:"arch"`
	// ONNXRuntime and OpenCV are the library versions the agent needs on the station
	// (e.g. "1.24", "4.6").
	ONNXRuntime string `json:"onnxruntime"`
	OpenCV      string `json:"opencv"`
	// Migration are notes for the operator: what changes in config or store.
	Migration string `json:"migration,omitempty"`
	// Rollback allows installing the release over a higher version.
	Rollback bool `json:"rollback,omitempty"`
	// ConfigVersion is the agent config version the release's agent reads (informative: the
	// updater asks the agent itself to check the station's config). 0: not stated.
	ConfigVersion int `json:"config_version,omitempty"`
	// StoreFormat is the verdict store format the release's agent migrates the store to, and
	// StoreMinReader the oldest format that still opens it afterwards (agent/store). 0: not
	// stated, read as 1 (releases before store formats). The updater refuses a release whose
	// StoreMinReader is above the committed release's StoreFormat: after a rollback the
	// previous agent could not open the verdict store.
	StoreFormat    uint64 `json:"store_format,omitempty"`
	StoreMinReader uint64 `json:"store_min_reader,omitempty"`
	// Files maps every member but manifest.json and signature to its hex sha256.
	Files map[string]string `json:"files"`
}

// Validate checks the manifest's fields.
func (m *ReleaseManifest) Validate() error {
	var errs []string
	if m.Format != ReleaseFormat {
		errs = append(errs, fmt.Sprintf("format %q, want %q", m.Format, ReleaseFormat))
	}
	if _, err := bundle.ParseSemver(m.Version); err != nil {
		errs = append(errs, "version: "+err.Error())
	}
	if m.Arch == "" {
		errs = append(errs, "arch: empty (amd64, arm64)")
	}
	if m.ONNXRuntime == "" {
		errs = append(errs, "onnxruntime: empty (required ONNX Runtime version)")
	}
	if m.OpenCV == "" {
		errs = append(errs, "opencv: empty (required OpenCV version)")
	}
	if m.StoreMinReader > max(m.StoreFormat, 1) {
		errs = append(errs, fmt.Sprintf("store_min_reader %d is above store_format %d", m.StoreMinReader, m.StoreFormat))
	}
	for _, req := range []string{AgentFile, ConfigFile} {
		if _, ok := m.Files[req]; !ok {
			errs = append(errs, "files: no "+req)
		}
	}
	for name := range m.Files {
		if name == ManifestFile || name == SignatureFile {
			errs = append(errs, fmt.Sprintf("files: %q is a reserved name", name))
		}
	}
	if len(errs) > 0 {
		slices.Sort(errs)
		return fmt.Errorf("%w: manifest: %s", ErrBadRelease, strings.Join(errs, "; "))
	}
	return nil
}

// Release is a read (and, unless from InspectRelease, verified) agent release.
type Release struct {
	Manifest     *ReleaseManifest
	ManifestJSON []byte
	Signature    []byte // nil when unsigned
	// Files holds every member but manifest.json and signature.
	Files map[string][]byte
	KeyID string
}

// BuildRelease fills m.Files with the sha256 of files (which must hold AgentFile and
// ConfigFile), validates m, signs it with key (nil: unsigned, for "takt firmware sign"
// later) and writes the tar to w.
func BuildRelease(w io.Writer, m ReleaseManifest, files map[string][]byte, key ed25519.PrivateKey) error {
	if m.Format == "" {
		m.Format = ReleaseFormat
	}
	m.Files = map[string]string{}
	for name, data := range files {
		m.Files[name] = sha256Hex(data)
	}
	if err := m.Validate(); err != nil {
		return err
	}
	manifest, err := json.MarshalIndent(&m, "", "  ")
	if err != nil {
		return err
	}
	manifest = append(manifest, '\n')
	var sig []byte
	if key != nil {
		if sig, err = bundle.SignManifest(manifest, key); err != nil {
			return err
		}
	}
	if err := bundle.WriteSignedTar(w, manifest, files, sig); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	return nil
}

// Sign re-signs r (a release read with InspectRelease) with key; rollback sets the
// manifest's rollback flag first. It writes the signed tar to w.
func (r *Release) Sign(w io.Writer, key ed25519.PrivateKey, rollback bool) error {
	m := *r.Manifest
	m.Rollback = m.Rollback || rollback
	return BuildRelease(w, m, r.Files, key)
}

// ReadRelease reads a release tar and verifies it: a complete tar of regular files with
// clean unique paths; an ed25519 signature of manifest.json by one of keys (errors wrap
// bundle.ErrBadSignature); a valid manifest; every member listed with its sha256 and every
// listed file present (errors wrap ErrBadRelease).
func ReadRelease(r io.Reader, keys bundle.TrustedKeys) (*Release, error) {
	return readRelease(r, keys, true)
}

// OpenRelease is ReadRelease of the file at path.
func OpenRelease(path string, keys bundle.TrustedKeys) (*Release, error) {
	return openRelease(path, keys, true)
}

// InspectRelease reads the release at path WITHOUT verifying its signature: for display
// and for signing, never to install.
func InspectRelease(path string) (*Release, error) {
	return openRelease(path, nil, false)
}

func openRelease(path string, keys bundle.TrustedKeys, verify bool) (*Release, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	defer f.Close()
	rel, err := readRelease(f, keys, verify)
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", path, err)
	}
	return rel, nil
}

func readRelease(r io.Reader, keys bundle.TrustedKeys, verify bool) (*Release, error) {
	members, err := bundle.ReadTarMembers(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRelease, err)
	}
	manifest, ok := members[ManifestFile]
	if !ok {
		return nil, fmt.Errorf("%w: no %s", ErrBadRelease, ManifestFile)
	}
	rel := &Release{ManifestJSON: manifest, Files: map[string][]byte{}}
	sig, signed := members[SignatureFile]
	switch {
	case verify && !signed:
		return nil, fmt.Errorf("%w: unsigned: no %s member", bundle.ErrBadSignature, SignatureFile)
	case verify:
		if rel.KeyID, err = bundle.VerifyManifest(manifest, sig, keys); err != nil {
			return nil, err
		}
	case signed:
		rel.KeyID = bundle.SignatureKeyID(sig)
	}
	if signed {
		rel.Signature = sig
	}
	var m ReleaseManifest
	dec := json.NewDecoder(bytes.NewReader(manifest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: manifest.json: %v", ErrBadRelease, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	rel.Manifest = &m
	for name, data := range members {
		if name == ManifestFile || name == SignatureFile {
			continue
		}
		want, listed := m.Files[name]
		if !listed {
			return nil, fmt.Errorf("%w: %s is in the release but not listed in the manifest", ErrBadRelease, name)
		}
		if got := sha256Hex(data); got != want {
			return nil, fmt.Errorf("%w: %s: sha256 %s, manifest says %s (tampered)", ErrBadRelease, name, got, want)
		}
		rel.Files[name] = data
	}
	for name := range m.Files {
		if _, ok := members[name]; !ok {
			return nil, fmt.Errorf("%w: %s is listed in the manifest but missing", ErrBadRelease, name)
		}
	}
	return rel, nil
}

// CheckUpgrade reports whether next may replace the committed version running ("" when
// unknown: anything goes): next must be higher unless it is signed as a rollback. Errors
// wrap ErrDowngrade.
func CheckUpgrade(running string, next *ReleaseManifest) error {
	if running == "" {
		return nil
	}
	a, err := bundle.ParseSemver(running)
	if err != nil {
		return fmt.Errorf("running version: %w", err)
	}
	b, err := bundle.ParseSemver(next.Version)
	if err != nil {
		return fmt.Errorf("%w: version: %v", ErrBadRelease, err)
	}
	if b.Compare(a) <= 0 && !next.Rollback {
		return fmt.Errorf("%w: version %s is not above the committed %s (a rollback must be signed with \"rollback\": true)",
			ErrDowngrade, next.Version, running)
	}
	return nil
}

// checkStoreFormat refuses next when the committed release (in slotDir, version running)
// could not open the verdict store after next migrated it. Errors wrap ErrBadRelease.
func checkStoreFormat(slotDir, running string, next *ReleaseManifest) error {
	reads := uint64(1)
	if m, err := InspectSlot(slotDir); err == nil && m.StoreFormat > 0 {
		reads = m.StoreFormat
	}
	if next.StoreMinReader > reads {
		return fmt.Errorf("%w: %s migrates the verdict store to format %d, which only agents of store format %d or later open; "+
			"the committed %s reads format %d, so a rollback could not open the store (install a release in between that reads format %d and keeps min_reader at %d or below)",
			ErrBadRelease, next.Version, next.StoreFormat, next.StoreMinReader, running, reads, next.StoreFormat, reads)
	}
	return nil
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
