// Package onnxpb holds the ONNX protobuf messages (ModelProto, GraphProto, NodeProto,
// TensorProto, ...) generated from onnx.proto (ONNX 1.12, IR version 8) with protoc and
// protoc-gen-go v1.36.12. Takt writes its own models with them; regenerate with
// `make onnxpb` after changing onnx.proto.
package onnxpb
