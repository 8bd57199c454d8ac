package snapshot

import (
	"reflect"
	"strconv"
	"testing"
)

func TestSplitSampled(t *testing.T) {
	sample := func(n int) [][]string {
		s := make([][]string, n)
		for i := range s {
			s[i] = []string{strconv.Itoa(i)}
		}
		return s
	}
	for _, c := range []struct {
		sampled, n int
		want       [][]string
	}{
		{1000, 4, [][]string{{"249"}, {"499"}, {"749"}}},
		{1000, 1, nil},
		{250, 4, [][]string{{"124"}}}, // two ranges of at least 100 sampled keys
		{199, 64, nil},
		{0, 8, nil},
	} {
		if got := splitSampled(sample(c.sampled), c.n); !reflect.DeepEqual(got, c.want) {
			t.Errorf("splitSampled(%d keys, %d) = %v, want %v", c.sampled, c.n, got, c.want)
		}
	}
}
