// Package backbone cuts a user-supplied ONNX feature extractor (a CNN trained elsewhere,
// e.g. a torchvision ResNet) at one or more layers so that the PatchCore trainer in
// package train can splice it into its anomaly graph in place of the filter bank.
//
// # Basics
//
// Cut parses Options.ONNX, keeps only the nodes and initializers the Layer tensors depend
// on, renames them away from Takt's own tensor names and checks the operators against
// the opset Takt's graph runs at. Resolve does that and then sizes the input and runs the
// cut model once in ONNX Runtime to learn the shape of its feature maps (InH, InW, FeatC,
// FeatH, FeatW). AddFeatures writes the normalization and the cut graph into a graph
// being built.
//
// # Caveats
//
// Resolve needs ONNX Runtime (cgo); without cgo it returns an error wrapping
// models.ErrNoCgo. Cut is pure Go.
package backbone
