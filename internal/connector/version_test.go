package connector

import (
	"os"
	"testing"
)

func TestVersionIsTheMetadataImageTag(t *testing.T) {
	if v := Version([]byte("data:\n  name: Shapelog\n  dockerImageTag: 1.2.3\nmetadataSpecVersion: \"1.0\"\n")); v != "1.2.3" {
		t.Errorf("Version = %q, want 1.2.3", v)
	}
	for _, dir := range []string{"source", "destination"} {
		b, err := os.ReadFile("../../" + dir + "/metadata.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if v := Version(b); v == "" {
			t.Errorf("%s/metadata.yaml: no version", dir)
		}
	}
	for _, bad := range []string{"data:\n  name: x\n", "not: [yaml", ""} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Version(%q) did not panic", bad)
				}
			}()
			Version([]byte(bad))
		}()
	}
}
