// Package bundle is the signed model bundle format and the trust around it, in pure Go:
// the manifest, ed25519 signing and key files, trust policy (key rotation, revocation,
// downgrade refusal), semantic versions, crash-safe file writes, and the checks of an ONNX
// model's header against what Takt can run. It imports neither OpenCV nor ONNX Runtime, so
// the firmware updater and the model OTA path verify without cgo.
//
// # Basics
//
// A bundle is a tar of manifest.json, model.onnx, optional golden/ files and signature (an
// ed25519 signature of manifest.json, which lists the sha256 of every other file).
// OpenBundle verifies, in order: a complete tar of clean regular files, the signature by
// a TrustedKeys key, the manifest (strict JSON, every key checked), every file's sha256,
// and the model against the manifest. BuildBundle and WriteBundleFile make one;
// WriteKeyPair makes a key pair. SignManifest, VerifyManifest, ReadTarMembers and
// WriteSignedTar are the same signature and tar rules for other signed artifacts (agent
// releases in package firmware).
//
// InspectModel reads an ONNX file's header (inputs, outputs with their symbolic dims,
// opset, metadata, operators) without copying its weights; RunSpecOf and ManifestSpec
// check it and say how to run it. Recognize tells the exports of anomalib (1.x, 2.x),
// torchvision/timm classifiers and Ultralytics YOLO (classify, detect) apart and writes
// their manifest, asking (Question) for what the model does not tell.
// InputShape and Region are the model input and the frame rectangles that manifests,
// runtime and trainers share.
//
// # Caveats
//
// A verified bundle is trusted to be what its signer made, not to run: whether ONNX Runtime
// loads it and reproduces its golden set is checked by models.NewRuntime on the station.
// WriteFileAtomic makes a write crash-safe on filesystems that honour fsync and rename.
package bundle
