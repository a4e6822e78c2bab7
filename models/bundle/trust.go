package bundle

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
)

// ErrRevokedKey means a bundle signed by a key whose id the station has revoked. It wraps
// ErrBadSignature: a revoked key is never trusted, whatever the trusted key files say.
var ErrRevokedKey = fmt.Errorf("%w: signed by a revoked key", ErrBadSignature)

// TrustPolicy is what a station accepts model bundles from: its trusted public keys (several
// may be trusted at once, which is how a signing key is rotated) minus the revoked key ids.
//
// Rotating the cloud's signing key without a gap:
//  1. make the new pair (takt model keygen) and add its .pub to every station's trusted keys,
//     beside the old one; bundles signed by either verify;
//  2. sign new bundles with the new key only;
//  3. add the old key's id (takt model inspect prints it) to the revoked ids: bundles signed
//     by it are refused from then on, including one that is still announced or cached;
//  4. remove the old .pub at leisure (revocation alone suffices, and survives a config that
//     still lists the old file).
type TrustPolicy struct {
	keys    TrustedKeys
	revoked map[string]bool
}

var keyIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// NewTrustPolicy trusts keys except those whose KeyID is in revoked. A revoked id must be 16
// lowercase hex digits (KeyID); it need not be one of keys (a key may be revoked before a
// station ever trusted it). At least one key must remain trusted.
func NewTrustPolicy(keys TrustedKeys, revoked []string) (TrustPolicy, error) {
	p := TrustPolicy{keys: TrustedKeys{}, revoked: map[string]bool{}}
	for _, id := range revoked {
		if !keyIDRE.MatchString(id) {
			return TrustPolicy{}, fmt.Errorf("revoked key id %q: want 16 lowercase hex digits (the key id takt model inspect prints)", id)
		}
		p.revoked[id] = true
	}
	for id, k := range keys {
		if !p.revoked[id] {
			p.keys[id] = k
		}
	}
	if len(p.keys) == 0 {
		return TrustPolicy{}, errors.New("no trusted key left: every trusted key is revoked")
	}
	return p, nil
}

// KeyIDs lists the trusted (not revoked) key ids, sorted.
func (p TrustPolicy) KeyIDs() []string {
	ids := make([]string, 0, len(p.keys))
	for id := range p.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Revoked reports whether id is revoked.
func (p TrustPolicy) Revoked(id string) bool { return p.revoked[id] }

// ReadBundle verifies the bundle tar in data as ReadBundle does, with the policy's keys; a
// bundle signed by a revoked key fails with ErrRevokedKey naming the key.
func (p TrustPolicy) ReadBundle(data []byte) (*Bundle, error) {
	members, err := readTar(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	if id := SignatureKeyID(members[signatureFile]); id != "" && p.revoked[id] {
		return nil, fmt.Errorf("%w %s (revoked on this station)", ErrRevokedKey, id)
	}
	return ReadBundle(bytes.NewReader(data), p.keys)
}

// OpenBundle reads and verifies the bundle file at path; see ReadBundle.
func (p TrustPolicy) OpenBundle(path string) (*Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if int64(len(data)) > MaxBundleSize {
		return nil, fmt.Errorf("bundle %s: %w: larger than %d bytes", path, ErrBadBundle, MaxBundleSize)
	}
	b, err := p.ReadBundle(data)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	return b, nil
}

// ErrDowngrade means a bundle whose version is not above the running model's and that is
// not signed as a rollback (anti-rollback: an attacker who replays an old, validly signed
// bundle cannot bring back a model with known faults). It wraps ErrBadBundle.
var ErrDowngrade = fmt.Errorf("%w: downgrade", ErrBadBundle)

// CheckInstall reports whether next may replace running on an agent of agentVersion: the
// agent is new enough (min_agent_version) and next is a newer version of the same model, or
// a lower or equal one whose signed manifest says "rollback": true. running nil (nothing
// installed yet) accepts any version. Errors wrap ErrBadBundle, a downgrade ErrDowngrade.
func CheckInstall(running, next *Manifest, agentVersion string) error {
	if err := next.CheckAgent(agentVersion); err != nil {
		return err
	}
	if running == nil {
		return nil
	}
	return CheckUpgrade(running, next)
}
