package main

import (
	"slices"
	"strings"
	"testing"
)

func TestLcoreMap(t *testing.T) {
	for _, tc := range []struct {
		workers, ncpu int
		want          string
	}{
		{1, 2, "-l 0,1"},
		{3, 4, "-l 0,1,2,3"},
		{2, 2, "--lcores 0@(0-1),1@1,2@0"},
		{4, 2, "--lcores 0@(0-1),1@1,2@0,3@1,4@0"},
		{1, 1, "--lcores 0@(0-0),1@0"},
	} {
		if got := strings.Join(lcoreMap(tc.workers, tc.ncpu), " "); got != tc.want {
			t.Errorf("lcoreMap(%d workers, %d CPUs) = %q, want %q", tc.workers, tc.ncpu, got, tc.want)
		}
	}
}

func TestEALArgsKeepsGivenLcoresAndIsIdempotent(t *testing.T) {
	given := []string{"--no-huge", "--lcores", "0@0,1@1", "--file-prefix", "x"}
	got := ealArgs(given, 1)
	if want := append(slices.Clone(given), "--log-level", "*:warning"); !slices.Equal(got, want) {
		t.Errorf("ealArgs(%q) = %q, want %q", given, got, want)
	}
	once := ealArgs([]string{"--no-huge"}, 1)
	if twice := ealArgs(once, 1); !slices.Equal(once, twice) {
		t.Errorf("ealArgs twice = %q, once %q", twice, once)
	}
	if !slices.Contains(once, "--file-prefix") || !(slices.Contains(once, "-l") || slices.Contains(once, "--lcores")) {
		t.Errorf("ealArgs(--no-huge) = %q: want a file prefix and lcores", once)
	}
}
