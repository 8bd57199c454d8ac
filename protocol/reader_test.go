package protocol

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReaderSkipsLinesOverTheLimit(t *testing.T) {
	ok := `{"type":"LOG","log":{"level":"INFO","message":"m"}}`
	in := ok + "\n" + strings.Repeat("x", 100) + "\n" + ok + "\n" + ok[:len(ok)-1] + strings.Repeat(" ", 60) + "}\n" + strings.Repeat("y", 70)
	r := &Reader{r: bufio.NewReaderSize(strings.NewReader(in), 16), max: len(ok)}
	for _, want := range []int{1, -2, 3, -4, -5} {
		m, err := r.ReadMessage()
		var le *LineError
		switch {
		case want > 0 && (err != nil || m.Type != TypeLog || r.Line() != want):
			t.Fatalf("line %d: %v, %v at line %d", want, m, err, r.Line())
		case want < 0 && (!errors.As(err, &le) || le.Line != -want || !strings.Contains(err.Error(), "longer than 51 bytes")):
			t.Fatalf("line %d: want a LineError for its length, got %v", -want, err)
		}
	}
	if _, err := r.ReadMessage(); err != io.EOF {
		t.Fatalf("want EOF, got %v", err)
	}
	if NewReader(strings.NewReader("")).max != MaxLineLength {
		t.Fatal("NewReader does not apply MaxLineLength")
	}
}
