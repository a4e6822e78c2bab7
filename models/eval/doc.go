// Package eval measures anomaly scores against labels and chooses where a model's FAIL
// threshold lies: image AUROC, ROC curve, confusion and F1 at a threshold, and the
// operating point a plant states as a false-reject budget (the share of good parts it
// accepts to reject), estimated from cross-validated good scores with a tail fit.
//
// It is pure Go, so the trainers, takt-cloud's evaluation and the station's model-update
// checks share one definition of each rate.
//
// # Caveats
//
// A score above the threshold is a defect (FAIL), as in the station's runtime. NaN scores
// make AUROC NaN; the operating-point helpers skip non-finite scores. Quantiles beyond the
// highest good score seen come from a generalized Pareto fit to the upper quarter of the
// scores: with fewer than eight scores there is no fit and FalseRejectThreshold refuses.
package eval
