// Package strictyaml decodes configuration files strictly: a key that no
// field takes is an error naming the key and its line, so a typo never
// silently falls back to a default. Structs may embed others with
// `yaml:",inline"`; their keys count as the outer struct's own.
//
// # Caveats
//
// Decoding goes over the value passed in, so fields keep what they held when
// their key is absent: pass a value filled with the defaults. An empty
// document leaves it unchanged and is not an error.
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Unmarshal decodes the YAML document data into v (a pointer).
func Unmarshal(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return clean(err)
	}
	return nil
}

// Decode decodes the YAML node n into v (a pointer), as strictly as
// Unmarshal. A zero node (a key that was absent) leaves v unchanged.
func Decode(n *yaml.Node, v any) error {
	if n == nil || n.Kind == 0 {
		return nil
	}
	raw, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	return Unmarshal(raw, v)
}

// goType is how the YAML library names a Go type in its messages
// ("in type companion.S3Config"); the package path means nothing to whoever
// edits the file.
var goType = regexp.MustCompile(`in type \*?(?:[A-Za-z0-9_]+\.)?`)

// clean joins the library's per-field errors into one message, each with its
// line, and drops Go package names from them.
func clean(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return errors.New(goType.ReplaceAllString(strings.Join(te.Errors, "; "), "in "))
	}
	return fmt.Errorf("%w", err)
}
