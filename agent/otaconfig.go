package agent

import (
	"fmt"
	"path/filepath"
	"regexp"
	"time"

	"github.com/takt-edge/takt/cloudsync/wire"
)

// ModelUpdateConfig configures over-the-air model updates (model_update): which keys a
// bundle must be signed by, how much disk staging may use, and the policies of the
// validate, shadow and watch steps. See agent/README.md, "Over-the-air model updates".
type ModelUpdateConfig struct {
	// Enabled accepts model/available announcements and install requests. Default false.
	Enabled bool `yaml:"enabled"`
	// TrustedKeys are public key files (PEM) a bundle must be signed by; default the
	// trusted_keys of model (or of every entry of models). Several keys may be trusted at once (key rotation).
	TrustedKeys []string `yaml:"trusted_keys"`
	// RevokedKeys are key ids (16 hex digits, as takt model inspect prints) never trusted,
	// even if a trusted key file holds them.
	RevokedKeys []string `yaml:"revoked_keys"`
	// StagingBudget bounds the disk a download may use (one bundle). Default 512MiB.
	StagingBudget wire.ByteSize `yaml:"staging_budget"`
	// Validate is the policy of the validation step, before any live frame.
	Validate ValidatePolicy `yaml:"validate"`
	// Shadow is the policy of the shadow step, on live frames beside the active model.
	Shadow ShadowPolicy `yaml:"shadow"`
	// Watch is the policy of the watch after promotion; crossing a limit rolls back.
	Watch WatchPolicy `yaml:"watch"`
}

// ValidatePolicy: the candidate loads on the provider chain, matches its manifest, replays
// its golden set, then runs LatencyRuns times; its p99 must stay within LatencyFraction of
// the station's deadline.
type ValidatePolicy struct {
	// LatencyRuns is the number of timed inferences. Default 30.
	LatencyRuns int `yaml:"latency_runs"`
	// LatencyFraction of deadline the p99 may reach. Default 0.5.
	LatencyFraction float64 `yaml:"latency_fraction"`
}

// ShadowPolicy: the candidate scores live frames beside the active model, off the active
// path, until Parts parts were compared or Duration passed (whichever first, with at least
// MinParts compared); then it is promoted if agreement, latency and, when its bundle
// states an expected false-reject rate, its false rejects meet the policy.
type ShadowPolicy struct {
	// Parts compared before deciding; 0 skips the shadow step. Default 200.
	Parts int `yaml:"parts"`
	// Duration ends the shadow step early when set (> 0). Default 0 (parts only).
	Duration time.Duration `yaml:"duration"`
	// MinParts is the least number of compared parts a decision needs when Duration ends the
	// step first. Default 20 (or Parts when lower).
	MinParts int `yaml:"min_parts"`
	// MinAgreement is the fraction of parts on which both models decide alike. Default 0.95.
	MinAgreement float64 `yaml:"min_agreement"`
	// MaxLatencyRatio bounds the candidate's p99 inference time over the active model's.
	// Default 2.
	MaxLatencyRatio float64 `yaml:"max_latency_ratio"`
	// Queue is the number of frames waiting for the shadow worker; more are dropped, never
	// waited for. Default 2.
	Queue int `yaml:"queue"`
	// MaxBusy is the fraction of the time the shadow worker may spend running the
	// candidate: after an inference of d it rests d*(1-MaxBusy)/MaxBusy, and the frames
	// that find the queue full meanwhile are dropped (counted). It bounds what the shadow
	// takes from the cores the active model runs on. Default 0.25; 1 never rests.
	MaxBusy float64 `yaml:"max_busy"`
	// FalseRejectSignificance: a candidate whose bundle states an expected false-reject
	// rate is refused when, among the parts the active model PASSed, the share it would
	// FAIL is clearly above that rate: a one-sided binomial test at this significance.
	// Default 0.01.
	FalseRejectSignificance float64 `yaml:"false_reject_significance"`
	// FalseRejectMinParts is the least number of parts the active model PASSed before that
	// test may refuse. Default 50.
	FalseRejectMinParts int `yaml:"false_reject_min_parts"`
}

// WatchPolicy: after a promotion, for Parts parts, the new model's errors (NaN or inference
// errors), p99 latency and FAIL rate are compared with the previous model's baseline, and,
// when its bundle states an expected false-reject rate, its FAIL share with that rate.
type WatchPolicy struct {
	// Parts watched after a promotion; 0 disables the watch. Default 200.
	Parts int `yaml:"parts"`
	// MinParts watched before the rates are judged (errors are judged at once). Default 20.
	MinParts int `yaml:"min_parts"`
	// MaxErrorRate is the largest fraction of parts with a NaN score or an inference error.
	// Default 0.02.
	MaxErrorRate float64 `yaml:"max_error_rate"`
	// MaxLatencyRatio bounds p99 inference time over the previous model's. Default 3.
	MaxLatencyRatio float64 `yaml:"max_latency_ratio"`
	// MaxFailRateIncrease is the largest rise of the FAIL rate over the previous model's, in
	// absolute fraction of parts. Default 0.2.
	MaxFailRateIncrease float64 `yaml:"max_fail_rate_increase"`
	// MaxRestarts: an agent that restarts more often while a new model is in shadow or
	// watch is crash-looping on it; it rolls back. Default 3.
	MaxRestarts int `yaml:"max_restarts"`
	// FalseRejectSignificance: a model whose bundle states an expected false-reject rate
	// rolls back when its FAIL share is clearly above that rate plus the previous model's
	// FAIL share (the defects the line makes): a one-sided binomial test at this
	// significance. Default 0.01.
	FalseRejectSignificance float64 `yaml:"false_reject_significance"`
	// FalseRejectMinParts is the least number of watched parts before that test may roll
	// back. Default 50.
	FalseRejectMinParts int `yaml:"false_reject_min_parts"`
}

func defaultModelUpdateConfig() ModelUpdateConfig {
	return ModelUpdateConfig{
		StagingBudget: 512 << 20,
		Validate:      ValidatePolicy{LatencyRuns: 30, LatencyFraction: 0.5},
		Shadow: ShadowPolicy{Parts: 200, MinParts: 20, MinAgreement: 0.95, MaxLatencyRatio: 2, Queue: 2, MaxBusy: 0.25,
			FalseRejectSignificance: 0.01, FalseRejectMinParts: 50},
		Watch: WatchPolicy{Parts: 200, MinParts: 20, MaxErrorRate: 0.02, MaxLatencyRatio: 3, MaxFailRateIncrease: 0.2, MaxRestarts: 3,
			FalseRejectSignificance: 0.01, FalseRejectMinParts: 50},
	}
}

var keyIDPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)

// validate checks model_update; keys are the model's own trusted key files (the default).
func (u ModelUpdateConfig) validate(modelKeys []string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if u.Enabled && len(u.TrustedKeys) == 0 && len(modelKeys) == 0 {
		bad("model_update.trusted_keys: updates need at least one trusted public key file (or model.trusted_keys)")
	}
	for i, id := range u.RevokedKeys {
		if !keyIDPattern.MatchString(id) {
			bad("model_update.revoked_keys[%d]: %q is not a key id (16 lowercase hex digits, as takt model inspect prints)", i, id)
		}
	}
	if u.StagingBudget < 1<<20 {
		bad("model_update.staging_budget: %d bytes is below the minimum 1MiB", u.StagingBudget)
	}
	if v := u.Validate; v.LatencyRuns < 1 || v.LatencyRuns > 10000 {
		bad("model_update.validate.latency_runs: %d is not in 1..10000", v.LatencyRuns)
	}
	if f := u.Validate.LatencyFraction; !(f > 0 && f <= 1) {
		bad("model_update.validate.latency_fraction: %v is not in (0, 1]", f)
	}
	s := u.Shadow
	if s.Parts < 0 {
		bad("model_update.shadow.parts: %d must be >= 0 (0 skips the shadow step)", s.Parts)
	}
	if s.Duration < 0 {
		bad("model_update.shadow.duration: %v must be >= 0", s.Duration)
	}
	if s.MinParts < 1 {
		bad("model_update.shadow.min_parts: %d must be >= 1", s.MinParts)
	}
	if !(s.MinAgreement >= 0 && s.MinAgreement <= 1) {
		bad("model_update.shadow.min_agreement: %v is not in 0..1", s.MinAgreement)
	}
	if !(s.MaxLatencyRatio >= 1) {
		bad("model_update.shadow.max_latency_ratio: %v must be >= 1", s.MaxLatencyRatio)
	}
	if s.Queue < 1 || s.Queue > 64 {
		bad("model_update.shadow.queue: %d is not in 1..64", s.Queue)
	}
	if !(s.MaxBusy >= 0.01 && s.MaxBusy <= 1) {
		bad("model_update.shadow.max_busy: %v is not in 0.01..1 (the fraction of the time the shadow may run)", s.MaxBusy)
	}
	for _, p := range []struct {
		key          string
		significance float64
		minParts     int
	}{{"shadow", s.FalseRejectSignificance, s.FalseRejectMinParts}, {"watch", u.Watch.FalseRejectSignificance, u.Watch.FalseRejectMinParts}} {
		if !(p.significance > 0 && p.significance <= 0.5) {
			bad("model_update.%s.false_reject_significance: %v is not in (0, 0.5]", p.key, p.significance)
		}
		if p.minParts < 1 {
			bad("model_update.%s.false_reject_min_parts: %d must be >= 1", p.key, p.minParts)
		}
	}
	w := u.Watch
	if w.Parts < 0 {
		bad("model_update.watch.parts: %d must be >= 0 (0 disables the watch)", w.Parts)
	}
	if w.MinParts < 1 {
		bad("model_update.watch.min_parts: %d must be >= 1", w.MinParts)
	}
	if !(w.MaxErrorRate >= 0 && w.MaxErrorRate <= 1) {
		bad("model_update.watch.max_error_rate: %v is not in 0..1", w.MaxErrorRate)
	}
	if !(w.MaxLatencyRatio >= 1) {
		bad("model_update.watch.max_latency_ratio: %v must be >= 1", w.MaxLatencyRatio)
	}
	if !(w.MaxFailRateIncrease >= 0 && w.MaxFailRateIncrease <= 1) {
		bad("model_update.watch.max_fail_rate_increase: %v is not in 0..1", w.MaxFailRateIncrease)
	}
	if w.MaxRestarts < 1 {
		bad("model_update.watch.max_restarts: %d must be >= 1", w.MaxRestarts)
	}
	return errs
}

// keys returns the trusted key files: model_update.trusted_keys, else those of the models.
func (u ModelUpdateConfig) keys(modelKeys []string) []string {
	if len(u.TrustedKeys) > 0 {
		return u.TrustedKeys
	}
	return modelKeys
}

func (u *ModelUpdateConfig) resolvePaths(base string) {
	for i, p := range u.TrustedKeys {
		if p != "" && !filepath.IsAbs(p) {
			u.TrustedKeys[i] = filepath.Join(base, p)
		}
	}
}

// modelKeys lists the trusted key files of every configured model, without repeats.
func (c Config) modelKeys() []string {
	var keys []string
	seen := map[string]bool{}
	for _, m := range c.ModelConfigs() {
		for _, k := range m.TrustedKeys {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	return keys
}
