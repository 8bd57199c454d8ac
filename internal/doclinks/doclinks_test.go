package doclinks

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"
)

// TestMarkdownLinks checks every relative link of every Markdown file in the
// module (tracked or not; .git, node_modules and testdata are skipped): the
// file it names must exist inside the repository, and an #anchor into a
// Markdown file must match one of that file's headings as GitHub slugs them.
func TestMarkdownLinks(t *testing.T) {
	root := moduleRoot(t)
	c := newChecker(root)
	files, err := markdownFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no Markdown files under %s", root)
	}
	for _, f := range files {
		c.checkFile(f)
	}
	for _, p := range c.sortedProblems() {
		t.Error(p)
	}
	t.Logf("%d Markdown files, %d relative links checked", len(files), c.checked)
}

// TestSlug pins the GitHub heading-slug rules the checker relies on.
func TestSlug(t *testing.T) {
	for _, tc := range []struct{ heading, want string }{
		{"Quickstart", "quickstart"},
		{"Electric shape API (`/v1/shape`)", "electric-shape-api-v1shape"},
		{"Functions: PostgreSQL functions over Convex's functions API", "functions-postgresql-functions-over-convexs-functions-api"},
		{"PostgreSQL → PostgreSQL, step by step", "postgresql--postgresql-step-by-step"},
		{"Speed mode (Unix sockets and protobuf)", "speed-mode-unix-sockets-and-protobuf"},
		{"`invalid_cursor_behavior` and **bold**", "invalid_cursor_behavior-and-bold"},
		{"See [the docs](docs/x.md) now", "see-the-docs-now"},
		{"Ünïcode Überschrift 2", "ünïcode-überschrift-2"},
		{"a - b", "a---b"},
	} {
		if got := slugify(tc.heading); got != tc.want {
			t.Errorf("slugify(%q) = %q, want %q", tc.heading, got, tc.want)
		}
	}
	s := newSlugger()
	var got []string
	for _, h := range []string{"Snapshots", "Snapshots", "Snapshots-1", "Snapshots"} {
		got = append(got, s.slug(h))
	}
	if want := "snapshots snapshots-1 snapshots-1-1 snapshots-2"; strings.Join(got, " ") != want {
		t.Errorf("duplicate headings slug to %q, want %q", strings.Join(got, " "), want)
	}
}

// TestCheckerFindsBrokenLinks runs the checker on a small tree with one link
// of every kind, good and broken, and expects exactly the broken ones.
func TestCheckerFindsBrokenLinks(t *testing.T) {
	root := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/x\n")
	write("code.go", "package x\n")
	write("docs/guide.md", "# Guide\n\n## Set up `x` (fast)\n\n## Set up `x` (fast)\n\nOther\n=====\n\n<a name=\"custom\"></a>\n")
	write("README.md", strings.Join([]string{
		"# Top",
		"",
		"[ok file](docs/guide.md) [ok anchor](docs/guide.md#set-up-x-fast) [ok dup](docs/guide.md#set-up-x-fast-1)",
		"[ok setext](docs/guide.md#other) [ok html](docs/guide.md#custom) [ok self](#top) [ok code](code.go#L1)",
		"[ok dir](docs/) [ok web](https://example.com/missing.md) [ok mail](mailto:a@b.c) ![ok image](code.go \"title\")",
		"[ok, link text over",
		"two lines](docs/guide.md) and [`code` text](<docs/guide.md>) and [ok ref][good] and [good][]",
		"",
		"[missing file](docs/nope.md)",
		"[missing anchor](docs/guide.md#nope)",
		"[missing self anchor](#nope)",
		"[outside](../elsewhere.md)",
		"[undefined ref][nosuch]",
		"[bad ref][bad]",
		"",
		"`[in code](nope.md)` and ``[in `code`](nope.md)``",
		"",
		"```md",
		"[in a fence](nope.md)",
		"```",
		"",
		"[good]: docs/guide.md#other",
		"[bad]: docs/guide.md#also-nope",
		"",
	}, "\n"))

	c := newChecker(root)
	files, err := markdownFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		c.checkFile(f)
	}
	var got []string
	for _, p := range c.sortedProblems() {
		got = append(got, fmt.Sprintf("%s:%d %s", p.file, p.line, p.target))
	}
	want := []string{
		"README.md:9 docs/nope.md",
		"README.md:10 docs/guide.md#nope",
		"README.md:11 #nope",
		"README.md:12 ../elsewhere.md",
		"README.md:13 [nosuch]",
		"README.md:23 docs/guide.md#also-nope",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if c.checked != 17 {
		t.Errorf("checked %d relative links, want 17", c.checked)
	}
}

// moduleRoot walks up from the test's directory to the one holding go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// markdownFiles lists every *.md file under root, skipping .git,
// node_modules and testdata directories.
func markdownFiles(root string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "testdata":
				return filepath.SkipDir
			}
			return nil
		}
		if strings.EqualFold(filepath.Ext(path), ".md") {
			files = append(files, path)
		}
		return nil
	})
	sort.Strings(files)
	return files, err
}

type problem struct {
	file   string // relative to the root, slash-separated
	line   int
	target string
	msg    string
}

func (p problem) String() string {
	return fmt.Sprintf("%s:%d: link %q: %s", p.file, p.line, p.target, p.msg)
}

type checker struct {
	root     string
	anchors  map[string]map[string]bool // Markdown file → its anchors
	problems []problem
	checked  int
}

func newChecker(root string) *checker {
	return &checker{root: root, anchors: map[string]map[string]bool{}}
}

var (
	// inlineLink matches [text](target "title") and ![alt](target): link text
	// may hold one level of brackets, the target balanced parentheses.
	inlineLink = regexp.MustCompile(`!?\[((?:[^\[\]\\]|\\.|\[(?:[^\[\]\\]|\\.)*\])*)\]\(\s*(<[^<>\n]*>|(?:[^\s()\\]|\\.|\((?:[^\s()\\]|\\.)*\))*)(?:\s+(?:"[^"]*"|'[^']*'|\([^()]*\)))?\s*\)`)
	// refDef matches a reference definition: [label]: target.
	refDef = regexp.MustCompile(`(?m)^ {0,3}\[((?:[^\[\]\\]|\\.)+)\]:[ \t]*\n?[ \t]*(<[^<>\n]*>|\S+)`)
	// refUse matches a full or collapsed reference: [text][label], [label][].
	refUse = regexp.MustCompile(`\[((?:[^\[\]\\]|\\.|\[(?:[^\[\]\\]|\\.)*\])*)\]\[((?:[^\[\]\\]|\\.)*)\]`)
	// htmlAnchor matches an HTML element's id or name attribute.
	htmlAnchor = regexp.MustCompile(`<[a-zA-Z][^>]*?\s(?:id|name)\s*=\s*["']([^"']+)["']`)
	scheme     = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// checkFile checks the links of one Markdown file.
func (c *checker) checkFile(path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		c.report(path, 0, "", err.Error())
		return
	}
	prose := proseOnly(string(data))
	lineAt := func(offset int) int { return 1 + strings.Count(prose[:offset], "\n") }

	for _, m := range inlineLink.FindAllStringSubmatchIndex(prose, -1) {
		c.checkTarget(path, lineAt(m[0]), prose[m[4]:m[5]])
	}
	defs := map[string]bool{}
	for _, m := range refDef.FindAllStringSubmatchIndex(prose, -1) {
		defs[normLabel(prose[m[2]:m[3]])] = true
		c.checkTarget(path, lineAt(m[4]), prose[m[4]:m[5]])
	}
	for _, m := range refUse.FindAllStringSubmatchIndex(prose, -1) {
		label := prose[m[4]:m[5]]
		if label == "" {
			label = prose[m[2]:m[3]]
		}
		if !defs[normLabel(label)] {
			c.report(path, lineAt(m[0]), "["+label+"]", "reference-style link with no [label]: definition")
		}
	}
}

// checkTarget checks one link target found in file at line.
func (c *checker) checkTarget(file string, line int, target string) {
	target = strings.TrimSuffix(strings.TrimPrefix(target, "<"), ">")
	if target == "" || scheme.MatchString(target) || strings.HasPrefix(target, "//") {
		return // empty, or http(s):, mailto: and other absolute URLs
	}
	c.checked++
	raw := target
	pathPart, frag, _ := strings.Cut(target, "#")
	pathPart, _, _ = strings.Cut(pathPart, "?")
	p, err := url.PathUnescape(pathPart)
	if err != nil {
		c.report(file, line, raw, "bad escape in path: "+err.Error())
		return
	}
	var dest string
	switch {
	case p == "":
		dest = file
	case strings.HasPrefix(p, "/"): // GitHub resolves these from the repository root
		dest = filepath.Join(c.root, filepath.FromSlash(p))
	default:
		dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(p))
	}
	if rel, err := filepath.Rel(c.root, dest); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		c.report(file, line, raw, "points outside the repository")
		return
	}
	info, err := os.Stat(dest)
	if err != nil {
		c.report(file, line, raw, "no such file: "+c.rel(dest))
		return
	}
	if frag == "" || info.IsDir() || !strings.EqualFold(filepath.Ext(dest), ".md") {
		return
	}
	anchor, err := url.PathUnescape(frag)
	if err != nil {
		c.report(file, line, raw, "bad escape in anchor: "+err.Error())
		return
	}
	anchors, err := c.anchorsOf(dest)
	if err != nil {
		c.report(file, line, raw, err.Error())
		return
	}
	if !anchors[anchor] {
		c.report(file, line, raw, fmt.Sprintf("no heading with slug %q in %s", anchor, c.rel(dest)))
	}
}

// sortedProblems returns the problems found, by file and line.
func (c *checker) sortedProblems() []problem {
	ps := append([]problem(nil), c.problems...)
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].file != ps[j].file {
			return ps[i].file < ps[j].file
		}
		return ps[i].line < ps[j].line
	})
	return ps
}

func (c *checker) report(file string, line int, target, msg string) {
	c.problems = append(c.problems, problem{file: c.rel(file), line: line, target: target, msg: msg})
}

func (c *checker) rel(path string) string {
	if r, err := filepath.Rel(c.root, path); err == nil {
		return filepath.ToSlash(r)
	}
	return path
}

// anchorsOf returns the anchors of a Markdown file: the GitHub slugs of its
// ATX and setext headings (outside fenced code) and HTML id/name attributes.
func (c *checker) anchorsOf(path string) (map[string]bool, error) {
	if a, ok := c.anchors[path]; ok {
		return a, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	anchors := map[string]bool{}
	s := newSlugger()
	var para []string // lines of the paragraph so far, for setext headings
	fence := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		if fence != "" {
			if closesFence(line, fence) {
				fence = ""
			}
			continue
		}
		if f := opensFence(line); f != "" {
			fence, para = f, nil
			continue
		}
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			anchors[m[1]] = true
		}
		if text, ok := atxHeading(line); ok {
			anchors[s.slug(text)] = true
			para = nil
			continue
		}
		trimmed := strings.TrimSpace(line)
		if len(para) > 0 && leadingSpaces(line) < 4 && trimmed != "" &&
			(strings.Trim(trimmed, "=") == "" || strings.Trim(trimmed, "-") == "") {
			anchors[s.slug(strings.Join(para, " "))] = true
			para = nil
			continue
		}
		if trimmed == "" || strings.HasPrefix(trimmed, "|") || strings.HasPrefix(trimmed, ">") ||
			strings.HasPrefix(trimmed, "* ") || strings.HasPrefix(trimmed, "- ") || strings.HasPrefix(trimmed, "+ ") {
			para = nil
			continue
		}
		para = append(para, trimmed)
	}
	c.anchors[path] = anchors
	return anchors, nil
}

// atxHeading returns the text of an ATX heading line ("## Text ##").
func atxHeading(line string) (string, bool) {
	if leadingSpaces(line) > 3 {
		return "", false
	}
	rest := strings.TrimLeft(line, " ")
	n := len(rest) - len(strings.TrimLeft(rest, "#"))
	if n < 1 || n > 6 {
		return "", false
	}
	rest = rest[n:]
	if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
		return "", false
	}
	rest = strings.TrimSpace(rest)
	// An optional closing sequence of #s, preceded by a space or alone.
	if t := strings.TrimRight(rest, "#"); t == "" {
		rest = ""
	} else if len(t) < len(rest) && (strings.HasSuffix(t, " ") || strings.HasSuffix(t, "\t")) {
		rest = strings.TrimSpace(t)
	}
	return rest, true
}

// opensFence returns the fence (``` or ~~~ run) a line opens, or "".
func opensFence(line string) string {
	t := strings.TrimLeft(line, " \t")
	for _, ch := range []string{"`", "~"} {
		n := len(t) - len(strings.TrimLeft(t, ch))
		if n >= 3 && (ch == "~" || !strings.Contains(t[n:], "`")) {
			return t[:n]
		}
	}
	return ""
}

// closesFence reports whether line closes a block opened with fence.
func closesFence(line, fence string) bool {
	t := strings.TrimSpace(line)
	return strings.HasPrefix(t, fence) && strings.Trim(t, fence[:1]) == ""
}

func leadingSpaces(line string) int {
	return len(line) - len(strings.TrimLeft(line, " "))
}

// proseOnly returns text with everything that cannot hold a link blanked
// out (fenced code blocks, code spans, HTML comments, escaped brackets);
// blanking keeps every newline so offsets still give line numbers.
func proseOnly(text string) string {
	lines := strings.Split(text, "\n")
	fence := ""
	for i, line := range lines {
		switch {
		case fence != "":
			if closesFence(line, fence) {
				fence = ""
			}
			lines[i] = ""
		case opensFence(line) != "":
			fence = opensFence(line)
			lines[i] = ""
		}
	}
	text = strings.Join(lines, "\n")
	text = regexp.MustCompile(`(?s)<!--.*?-->`).ReplaceAllStringFunc(text, blank)
	text = strings.NewReplacer(`\\`, "  ", `\[`, "  ", `\]`, "  ", "\\`", "  ").Replace(text)
	// Code spans end at their paragraph: blank them one paragraph at a time.
	paras := strings.Split(text, "\n\n")
	for i, p := range paras {
		paras[i] = blankCodeSpans(p)
	}
	return strings.Join(paras, "\n\n")
}

// blankCodeSpans blanks each code span (a backtick run up to the next run
// of the same length); a run with no partner is literal text.
func blankCodeSpans(p string) string {
	b := []byte(p)
	for i := 0; i < len(b); {
		if b[i] != '`' {
			i++
			continue
		}
		n := 1
		for i+n < len(b) && b[i+n] == '`' {
			n++
		}
		end := -1
		for j := i + n; j < len(b); {
			if b[j] != '`' {
				j++
				continue
			}
			m := 1
			for j+m < len(b) && b[j+m] == '`' {
				m++
			}
			if m == n {
				end = j + m
				break
			}
			j += m
		}
		if end < 0 {
			i += n
			continue
		}
		copy(b[i:end], blank(string(b[i:end])))
		i = end
	}
	return string(b)
}

// blank replaces every byte of s but newlines with a space.
func blank(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] != '\n' {
			b[i] = ' '
		}
	}
	return string(b)
}

func normLabel(s string) string {
	return strings.ToLower(strings.Join(strings.Fields(s), " "))
}

// slugger gives headings GitHub's anchors (github-slugger): a repeated slug
// gets -1, -2, … appended.
type slugger struct{ occurrences map[string]int }

func newSlugger() *slugger { return &slugger{occurrences: map[string]int{}} }

func (s *slugger) slug(heading string) string {
	base := slugify(heading)
	result := base
	for {
		if _, taken := s.occurrences[result]; !taken {
			break
		}
		s.occurrences[base]++
		result = fmt.Sprintf("%s-%d", base, s.occurrences[base])
	}
	s.occurrences[result] = 0
	return result
}

var (
	mdLinkOrImage = regexp.MustCompile(`!?\[([^\[\]]*)\]\([^()]*\)`)
	htmlTag       = regexp.MustCompile(`<[^>]+>`)
)

// slugify is GitHub's slug of one heading's rendered text: lowercase, every
// character but letters, marks, digits, "_", "-" and spaces dropped, spaces
// turned into hyphens. Markup is rendered first: backticks and HTML tags
// vanish, a link or image leaves its text.
func slugify(heading string) string {
	text := mdLinkOrImage.ReplaceAllString(heading, "$1")
	text = htmlTag.ReplaceAllString(text, "")
	text = strings.ToLower(text)
	var b strings.Builder
	for _, r := range text {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsMark(r) || unicode.IsNumber(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
