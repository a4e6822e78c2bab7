package cloudsync

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
	"strings"
)

// conflictKey is where content goes whose key already holds other content:
// "{key without extension}-conflict-{sha256[:16]}{extension}".
func conflictKey(key string, data []byte) string {
	sum := sha256.Sum256(data)
	ext := path.Ext(key)
	return strings.TrimSuffix(key, ext) + "-conflict-" + hex.EncodeToString(sum[:8]) + ext
}
