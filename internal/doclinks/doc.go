// Package doclinks holds a test that checks the relative links of every
// Markdown file in the repository: each target file must exist, and each
// #anchor into a Markdown file must match one of its headings under GitHub's
// slug rules. It has no code of its own; see doclinks_test.go.
package doclinks
