// Package trainer is how takt-cloud turns a dataset folder into a candidate
// model and scores it: the Trainer interface and its backends (builtin,
// which calls the models package in process; command; docker or podman;
// a Kubernetes Job), the dataset folder contract they all read (good/,
// defect/, labels.json), the experiment configuration, and the evaluation
// of a signed bundle on a validation folder.
//
// # Caveats
//
// The builtin trainer runs inside takt-cloud's process and links ONNX
// Runtime and OpenCV through the models package (builtin.go is the only
// file that calls its trainers); the external ones need only their command
// or container engine. Evaluate loads every candidate in ONNX Runtime.
package trainer
