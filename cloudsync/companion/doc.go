// Package companion is takt-cloud, the cloud companion of Takt stations: it
// ingests what stations upload to the bucket (verdict batches, images,
// operator labels) into a dataset index per model name, trains new models on
// demand, on enough new operator labels or on drift (of the PASS scores, or
// of the PASS images' brightness, contrast and sharpness), runs several
// experiment configurations per job on the good parts and the labelled
// defects and keeps the best on a validation set that includes labelled
// defects, promotes it only if it is at least as good as the promoted
// version on that same set, writes the signed bundle and index.json to the
// registry in the bucket, and announces promotions on model/available.
//
// # Basics
//
// New(cfg, log) validates the config, reads the signing key and opens the
// state folder (index.db, jobs/); Run(ctx) ingests, watches the triggers,
// runs jobs, serves the HTTP API and keeps the MQTT connection. Trainers sit
// behind the Trainer interface of package trainer: the builtin one calls the
// models package, external ones run a command, a container or a Kubernetes
// Job on the dataset folder contract.
//
// # Caveats
//
// Only one takt-cloud may use a state folder (bbolt locks it) and one
// should write a bucket's registry at a time; index.json is replaced with a
// conditional PUT, so two writers do not lose each other's entries, but
// their version numbers could collide and the second bundle write fails.
// Images are fetched when a job needs them, and PASS images after each
// ingest pass for their statistics when image drift is on; the cache they
// land in is pruned to cache.max_bytes and cache.max_age (cache.go).
package companion
