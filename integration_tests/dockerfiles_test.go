package integration_tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// goBuildLine is a Dockerfile's build step: its cgo setting and package.
var goBuildLine = regexp.MustCompile(`(?m)^RUN CGO_ENABLED=([01]) go build .* -o \S+ (\./\S+)$`)

// TestDockerfilesBuild runs each image's go build as its Dockerfile writes
// it (no Docker engine here): the engine needs cgo for pg_query, and an image
// built without it would not compile.
func TestDockerfilesBuild(t *testing.T) {
	for _, name := range []string{"engine", "source", "destination"} {
		df, err := os.ReadFile(filepath.Join("..", "Dockerfile."+name))
		if err != nil {
			t.Fatal(err)
		}
		m := goBuildLine.FindSubmatch(df)
		if m == nil {
			t.Errorf("Dockerfile.%s: no `RUN CGO_ENABLED=… go build … -o … ./pkg` line", name)
			continue
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(t.TempDir(), name), string(m[2]))
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+string(m[1]))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("Dockerfile.%s's build (CGO_ENABLED=%s go build %s) fails: %v\n%s", name, m[1], m[2], err, out)
		}
	}
}
