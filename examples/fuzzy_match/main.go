// The Go side of examples/fuzzy_match: the closest name for each query, by
// edit distance, the same algorithm as the Python code it is compared with.
// Run it with: python examples/fuzzy_match/fuzzy_match.py
package main

import (
	"log"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// Fuzzy matches misspelt names against a list of known ones.
type Fuzzy struct{}

// Batch is the argument of Best: Python sends {"queries": [...], "names": [...]}.
type Batch struct {
	Queries []string `msgpack:"queries"`
	Names   []string `msgpack:"names"`
}

// Best returns, for each query, [index of the closest name, its distance],
// the first such name on a tie.
func (Fuzzy) Best(batch Batch, best *[][2]int) error {
	names := make([][]rune, len(batch.Names))
	for i, name := range batch.Names {
		names[i] = []rune(name) // as Python does, count characters, not bytes
	}
	*best = make([][2]int, len(batch.Queries))
	for q, query := range batch.Queries {
		a := []rune(query)
		match := [2]int{-1, -1}
		for i, b := range names {
			if d := levenshtein(a, b); match[0] < 0 || d < match[1] {
				match = [2]int{i, d}
			}
		}
		(*best)[q] = match
	}
	return nil
}

// levenshtein is the number of single-character insertions, deletions and
// substitutions that turn a into b, computed one row at a time.
func levenshtein(a, b []rune) int {
	previous := make([]int, len(b)+1)
	current := make([]int, len(b)+1)
	for j := range previous {
		previous[j] = j
	}
	for i, ca := range a {
		current[0] = i + 1
		for j, cb := range b {
			cost := 1
			if ca == cb {
				cost = 0
			}
			current[j+1] = min(previous[j+1]+1, current[j]+1, previous[j]+cost)
		}
		previous, current = current, previous
	}
	return previous[len(b)]
}

func main() {
	if err := gotask.Register(Fuzzy{}); err != nil {
		log.Fatal(err)
	}
	gotask.Run()
}
