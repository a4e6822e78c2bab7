package companion

import (
	"strings"
	"testing"
)

// Verdict batches come from stations: the parser must reject what is not a
// batch with an error, never panic, and every record it accepts has the
// fields the index keys on.
func FuzzParseVerdictBatch(f *testing.F) {
	f.Add([]byte(`{"id":1,"station":"s","time":"2026-11-20T08:00:01Z","decision":"PASS","score":0.3,"threshold":1,"model":{"name":"m","version":"1.0.0"}}` + "\n"))
	f.Add([]byte("{\"id\":2,\"station\":\"s\",\"decision\":\"FAIL\",\"score\":null}\n\n{\"id\":3}\n"))
	f.Add([]byte("not json\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := parseVerdictBatch(data)
		if err != nil {
			return
		}
		for _, r := range recs {
			if r.ID == 0 || r.Station == "" || r.Decision == "" {
				t.Fatalf("accepted a record without id, station or decision: %+v", r)
			}
		}
	})
}

// Image keys are listed from the bucket, so anyone with write access
// chooses them: parseImageKey accepts only images/{station}/{y}/{m}/{d}/{id}.{ext}.
func FuzzParseImageKey(f *testing.F) {
	for _, k := range []string{"images/st/2026/11/20/0000000000000042.jpg", "images/st/2026/11/20/0000000000000001-conflict-ab.jpg",
		"images/x", "images/st/2026/11/20/0.png", "images//2026/11/20/0000000000000003.png", "verdicts/a/b/c/d/1.jsonl"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		ref, err := parseImageKey(key)
		if err != nil {
			return
		}
		if ref.ID == 0 || ref.Station == "" || ref.Key != key || !strings.HasPrefix(key, "images/"+ref.Station+"/") {
			t.Fatalf("parseImageKey(%q) = %+v", key, ref)
		}
	})
}
