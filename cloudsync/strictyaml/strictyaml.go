// Package strictyaml decodes configuration files strictly: a key that no
// field takes is an error naming the key, its path and its line, and the keys
// allowed there ("line 4: unknown key camera.pth (allowed: id, kind, ...)"),
// so a typo never silently falls back to a default. A key given twice is an
// error too. Structs may embed others with `yaml:",inline"`; their keys count
// as the outer struct's own.
//
// # Caveats
//
// Decoding goes over the value passed in, so fields keep what they held when
// their key is absent: pass a value filled with the defaults. Values of types
// that decode themselves (yaml.Node, yaml.Unmarshaler,
// encoding.TextUnmarshaler) are not checked here; a yaml.Node kept for later
// is decoded with [Decode] when its type is known.
package strictyaml

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Unmarshal decodes the YAML document data into out (a pointer to a
// struct). An empty document is an error, and so is a top level that is not
// a mapping.
func Unmarshal(data []byte, out any) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return clean(err)
	}
	if len(doc.Content) == 0 {
		return errors.New("empty file")
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: the top level must be a mapping of keys", root.Line)
	}
	return Decode(root, out)
}

// Decode decodes the YAML node n into out (a pointer), as strictly as
// Unmarshal; keys are named from n down. A zero node (a key that was absent)
// leaves out unchanged.
func Decode(n *yaml.Node, out any) error {
	if n == nil || n.Kind == 0 {
		return nil
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if err := checkKeys(n, reflect.TypeOf(out), ""); err != nil {
		return err
	}
	return clean(n.Decode(out))
}

var (
	nodeType     = reflect.TypeFor[yaml.Node]()
	unmarshaler  = reflect.TypeFor[yaml.Unmarshaler]()
	textDecoder  = reflect.TypeFor[encoding.TextUnmarshaler]()
	opaqueStruct = func(t reflect.Type) bool {
		return t == nodeType || reflect.PointerTo(t).Implements(unmarshaler) || reflect.PointerTo(t).Implements(textDecoder)
	}
)

// checkKeys walks n along t and reports the first key that t has no field
// for, or that is given twice. prefix is the path of n ("", "camera.",
// "cameras[0].").
func checkKeys(n *yaml.Node, t reflect.Type, prefix string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch {
	case opaqueStruct(t):
		return nil
	case (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			if err := checkKeys(item, t.Elem(), fmt.Sprintf("%s[%d].", strings.TrimSuffix(prefix, "."), i)); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkKeys(n.Content[i+1], t.Elem(), prefix+n.Content[i].Value+"."); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() != reflect.Struct || n.Kind != yaml.MappingNode:
		return nil
	}
	fields := map[string]reflect.Type{}
	var names []string
	collectFields(t, fields, &names)
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		if key.Tag == "!!merge" {
			continue
		}
		ft, ok := fields[key.Value]
		if !ok {
			return fmt.Errorf("line %d: unknown key %s%s (allowed: %s)", key.Line, prefix, key.Value, strings.Join(names, ", "))
		}
		if seen[key.Value] {
			return fmt.Errorf("line %d: key %s%s given twice", key.Line, prefix, key.Value)
		}
		seen[key.Value] = true
		if err := checkKeys(val, ft, prefix+key.Value+"."); err != nil {
			return err
		}
	}
	return nil
}

// collectFields adds the YAML keys of struct t, in field order, with the keys
// of inline structs in their place. Like the YAML library, it names an
// exported field without a tag by its lowercased name and skips "-".
func collectFields(t reflect.Type, fields map[string]reflect.Type, names *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if slices.Contains(strings.Split(opts, ","), "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				collectFields(ft, fields, names)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = f.Type
		*names = append(*names, name)
	}
}

// clean joins the library's per-value errors into one message, each with
// its line.
func clean(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return errors.New(strings.Join(te.Errors, "; "))
	}
	return err
}
