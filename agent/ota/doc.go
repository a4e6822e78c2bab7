// Package ota updates the station's models over the air: it verifies a signed bundle,
// validates it, runs it in shadow beside the serving model, swaps it in and watches it,
// rolling back on a regression.
//
// # Basics
//
// One goroutine (Updater.Run) takes install requests (model/available on MQTT, POST /model/install) one at a time through these steps,
// recording each in <data_dir>/models/state.json before it acts, so that a restart at any
// point resumes or discards the step, and reporting each on model/status:
//
//	downloading -> verifying -> validating -> shadow -> swapping -> active (watched)
//	      |             |             |           |                     |
//	   rejected      rejected      rejected    rejected             rolled-back
//
// The inspection loop never waits for the updater: it hands it each part's outcome
// (Updater.Observe), which feeds the shadow worker through a bounded queue that drops rather than
// blocks, and the watch after a promotion. A candidate replaces the station model of its
// manifest's name (models[].name or model.name, else the serving model's own name). A
// bundle whose manifest states an expected false-reject rate is held to it in shadow and
// in the watch by a one-sided binomial test (rates.go), never by a bare ratio.
//
// # Caveats
//
// Every step is durable before it acts, but a bundle that crashes the process is only
// found by counting restarts (model_update.watch.max_restarts).
package ota
