package train

import (
	"fmt"
	"strings"

	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/onnxpb"
	"google.golang.org/protobuf/proto"
)

// MethodEnsemble ("ensemble") is the template and PatchCore in one graph (Train's auto
// tries it, --method ensemble asks for it): each
// model's map and score are divided by its own threshold and the larger counts, so a part
// fails when either model would fail it. The template sees small deviations of aligned
// parts (a scratch), the memory bank what the template's per-pixel spread forgives (a
// hole missing where the pose varies); on the synthetic parts they miss different defects.
const MethodEnsemble = "ensemble"

// mergeEnsemble joins two anomaly models that read the same "image" input into one whose
// score and anomaly_map are max(a/thA, b/thB), with meta as its metadata. Every other name
// of a is prefixed "a_", of b "b_".
func mergeEnsemble(a, b []byte, thA, thB float64, meta [][2]string) ([]byte, error) {
	var ma, mb onnxpb.ModelProto
	if err := proto.Unmarshal(a, &ma); err != nil {
		return nil, fmt.Errorf("ensemble: first model: %w", err)
	}
	if err := proto.Unmarshal(b, &mb); err != nil {
		return nil, fmt.Errorf("ensemble: second model: %w", err)
	}
	if !proto.Equal(ma.Graph.Input[0], mb.Graph.Input[0]) || len(ma.Graph.Input) != 1 || len(mb.Graph.Input) != 1 {
		return nil, fmt.Errorf("ensemble: the models' inputs differ: %v and %v", ma.Graph.Input, mb.Graph.Input)
	}
	if ma.OpsetImport[0].GetVersion() != mb.OpsetImport[0].GetVersion() {
		return nil, fmt.Errorf("ensemble: opsets %d and %d differ", ma.OpsetImport[0].GetVersion(), mb.OpsetImport[0].GetVersion())
	}
	g := &onnxpb.GraphProto{Name: proto.String("ensemble"), Input: ma.Graph.Input}
	var mapOut *onnxpb.ValueInfoProto
	for _, part := range []struct {
		m      *onnxpb.ModelProto
		prefix string
	}{{&ma, "a_"}, {&mb, "b_"}} {
		rename := func(n string) string {
			if n == "" || n == "image" {
				return n
			}
			return part.prefix + n
		}
		for _, in := range part.m.Graph.Initializer {
			in.Name = proto.String(rename(in.GetName()))
			g.Initializer = append(g.Initializer, in)
		}
		for _, n := range part.m.Graph.Node {
			n.Name = proto.String(rename(n.GetName()))
			for i := range n.Input {
				n.Input[i] = rename(n.Input[i])
			}
			for i := range n.Output {
				n.Output[i] = rename(n.Output[i])
			}
			g.Node = append(g.Node, n)
		}
		for _, o := range part.m.Graph.Output {
			if o.GetName() == "anomaly_map" {
				mapOut = proto.Clone(o).(*onnxpb.ValueInfoProto)
			}
		}
	}
	if mapOut == nil {
		return nil, fmt.Errorf("ensemble: no anomaly_map output")
	}
	one := func(name string, v float32) {
		g.Initializer = append(g.Initializer, &onnxpb.TensorProto{Name: proto.String(name), Dims: []int64{1},
			DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), FloatData: []float32{v}})
	}
	one("ens_th_a", float32(thA))
	one("ens_th_b", float32(thB))
	node := func(op string, in []string, out string) {
		g.Node = append(g.Node, &onnxpb.NodeProto{Name: proto.String("ens_" + out), OpType: proto.String(op), Input: in, Output: []string{out}})
	}
	for _, o := range []string{"score", "anomaly_map"} {
		node("Div", []string{"a_" + o, "ens_th_a"}, "ens_a_"+o)
		node("Div", []string{"b_" + o, "ens_th_b"}, "ens_b_"+o)
		node("Max", []string{"ens_a_" + o, "ens_b_" + o}, o)
	}
	var scoreOut *onnxpb.ValueInfoProto
	for _, o := range ma.Graph.Output {
		if o.GetName() == "score" {
			scoreOut = o
		}
	}
	if scoreOut == nil {
		return nil, fmt.Errorf("ensemble: no score output")
	}
	g.Output = []*onnxpb.ValueInfoProto{scoreOut, mapOut}
	m := &onnxpb.ModelProto{IrVersion: ma.IrVersion, ProducerName: ma.ProducerName, OpsetImport: ma.OpsetImport, Graph: g,
		DocString: proto.String("Takt ensemble: " + strings.TrimSpace(ma.GetDocString()+" | "+mb.GetDocString()))}
	for _, kv := range meta {
		m.MetadataProps = append(m.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String(kv[0]), Value: proto.String(kv[1])})
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

// ensembleMeta is the metadata of an ensemble of a template and a PatchCore model.
func ensembleMeta(name, version string, in bundle.InputShape, threshold float64, images int, trainedAt string, thA, thB float64, methodA, methodB string) [][2]string {
	return [][2]string{
		{bundle.MetaTask, "anomaly"}, {bundle.MetaName, name}, {bundle.MetaVersion, version}, {bundle.MetaInput, in.String()},
		{bundle.MetaThreshold, fmt.Sprintf("%g", threshold)}, {bundle.MetaTrainedImages, fmt.Sprint(images)}, {bundle.MetaTrainedAt, trainedAt},
		{bundle.MetaMethod, fmt.Sprintf("ensemble max(template/%g, patchcore/%g); template: %s; patchcore: %s", thA, thB, methodA, methodB)},
	}
}
