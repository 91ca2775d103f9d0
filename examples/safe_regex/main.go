// The Go side of examples/safe_regex: regular expressions that users type,
// matched with Go's regexp package (RE2 syntax), whose time grows linearly
// with the input whatever the pattern.
// Run it with: python examples/safe_regex/safe_regex.py
package main

import (
	"log"
	"regexp"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// Grep searches lines for a pattern.
type Grep struct{}

// Query is the argument of Search: Python sends {"pattern": ..., "lines": [...]}.
type Query struct {
	Pattern string   `msgpack:"pattern"`
	Lines   []string `msgpack:"lines"`
}

// Search returns the indexes of the lines in which the pattern matches. A
// pattern RE2 does not accept, such as a backreference, is an error that
// says why, for the program to show its user.
func (Grep) Search(query Query, found *[]int) error {
	pattern, err := regexp.Compile(query.Pattern)
	if err != nil {
		return err
	}
	for i, line := range query.Lines {
		if pattern.MatchString(line) {
			*found = append(*found, i)
		}
	}
	return nil
}

func main() {
	if err := gotask.Register(Grep{}); err != nil {
		log.Fatal(err)
	}
	gotask.Run()
}
