package agent

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// Config versions. A release that renames or restructures config keys adds a configStep
// that rewrites the YAML tree of the previous version, and raises CurrentConfigVersion. An
// agent reads a file of an older version by migrating it in memory (LoadConfig), and
// `takt-agent config migrate` writes the migrated file. A file of a newer version than the
// agent knows is refused with a message naming both versions, before the strict key check
// would complain about keys it has never heard of: the firmware updater restores the
// config the older agent ran with when it rolls back (see the firmware package).

// configStep migrates a config tree from version to-1 to version to.
type configStep struct {
	to   int
	name string
	// apply rewrites the top-level mapping of the file; nil for a step that only records
	// the version.
	apply func(root *yaml.Node) error
}

// configSteps are every config migration, in order; configSteps[i].to == i+1. Version 1 is
// every file written before config_version existed (the key is optional in it).
var configSteps = []configStep{
	{to: 1, name: "configs without config_version"},
}

// CurrentConfigVersion is the config version this agent reads natively.
func CurrentConfigVersion() int { return configSteps[len(configSteps)-1].to }

// ErrConfigTooNew: the file's config_version is above CurrentConfigVersion (written for a
// newer agent).
var ErrConfigTooNew = errors.New("config is for a newer agent")

// ConfigMigration is what MigrateConfig did.
type ConfigMigration struct {
	From, To int
	Steps    []string // the names of the steps applied
}

// MigrateConfig migrates YAML config data to CurrentConfigVersion and returns the new
// data; when the file already is at that version it returns data unchanged (byte for byte).
// Migrated data keeps the file's comments where the YAML tree holds them. It neither
// checks the keys nor validates: ParseConfig and Validate (or LoadConfig) do that after.
func MigrateConfig(data []byte) ([]byte, ConfigMigration, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, ConfigMigration{}, err
	}
	if len(doc.Content) == 0 {
		return nil, ConfigMigration{}, errors.New("empty file")
	}
	if doc.Content[0].Kind != yaml.MappingNode {
		return nil, ConfigMigration{}, fmt.Errorf("line %d: the top level must be a mapping of keys", doc.Content[0].Line)
	}
	root := doc.Content[0]
	from, verNode, err := configVersionOf(root)
	if err != nil {
		return nil, ConfigMigration{}, err
	}
	m := ConfigMigration{From: from, To: from}
	if from > CurrentConfigVersion() {
		return nil, m, fmt.Errorf("%w: config_version %d, this agent reads config versions up to %d", ErrConfigTooNew, from, CurrentConfigVersion())
	}
	if from == CurrentConfigVersion() {
		return data, m, nil
	}
	for _, step := range configSteps {
		if step.to <= from {
			continue
		}
		if step.apply != nil {
			if err := step.apply(root); err != nil {
				return nil, m, fmt.Errorf("migrate config version %d -> %d (%s): %w", step.to-1, step.to, step.name, err)
			}
		}
		m.To = step.to
		m.Steps = append(m.Steps, step.name)
	}
	// Record the version reached, so the file is not migrated again and an older agent
	// refuses it with a clear message rather than an unknown key.
	value := strconv.Itoa(m.To)
	if verNode != nil {
		verNode.Value, verNode.Tag, verNode.Style = value, "!!int", 0
	} else {
		root.Content = append([]*yaml.Node{
			{Kind: yaml.ScalarNode, Value: "config_version", Tag: "!!str"},
			{Kind: yaml.ScalarNode, Value: value, Tag: "!!int", LineComment: "written by takt-agent config migrate"},
		}, root.Content...)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, m, err
	}
	if err := enc.Close(); err != nil {
		return nil, m, err
	}
	return buf.Bytes(), m, nil
}

// configVersionOf returns the top-level config_version (1 when absent) and its node.
func configVersionOf(root *yaml.Node) (int, *yaml.Node, error) {
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "config_version" {
			continue
		}
		n := root.Content[i+1]
		v, err := strconv.Atoi(n.Value)
		if err != nil || n.Kind != yaml.ScalarNode || v < 1 {
			return 0, nil, fmt.Errorf("line %d: config_version: %q is not a version number (1, 2, ...)", n.Line, n.Value)
		}
		return v, n, nil
	}
	return 1, nil, nil
}

// renameKey moves the value of key path (a.b.c, below root) to the new last name, keeping
// comments; missing parents or key are no change. A config step uses it for a renamed key.
func renameKey(root *yaml.Node, path []string, newName string) error {
	n := root
	for i, name := range path {
		if n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value != name {
				continue
			}
			if i == len(path)-1 {
				for k := 0; k+1 < len(n.Content); k += 2 {
					if n.Content[k].Value == newName {
						return fmt.Errorf("line %d: both %s and its new name %s are set; keep one", n.Content[k].Line, name, newName)
					}
				}
				n.Content[j].Value = newName
				return nil
			}
			next = n.Content[j+1]
			break
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return nil
}
