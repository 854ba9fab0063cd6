// Package configtest checks the configuration pattern every package
// follows: a section decodes over its DefaultConfig (keys left out keep
// their defaults, unknown keys are refused), and Validate changes nothing
// and names the key it refuses, within the section.
package configtest

import (
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Case is a YAML section and what it decodes to: the default with Want's
// changes. Invalid, when set, is how Validate's error for it starts.
type Case[C any] struct {
	YAML    string
	Want    func(*C)
	Invalid string
}

// Decodes checks each case: decoded with unknown keys refused, it equals
// def() changed by Want, and Validate answers as the case says without
// changing it.
func Decodes[C any](t *testing.T, def func() C, validate func(C) error, cases []Case[C]) {
	t.Helper()
	for _, tc := range cases {
		got, err := decode[C](tc.YAML)
		if err != nil {
			t.Errorf("%q: %v", tc.YAML, err)
			continue
		}
		want := def()
		if tc.Want != nil {
			tc.Want(&want)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q decoded to\n%+v\nwant\n%+v", tc.YAML, got, want)
		}
		err = validate(got)
		switch {
		case tc.Invalid == "" && err != nil:
			t.Errorf("%q: Validate() = %v", tc.YAML, err)
		case tc.Invalid != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.Invalid)):
			t.Errorf("%q: Validate() = %v, want an error starting %q", tc.YAML, err, tc.Invalid)
		}
		// A second decode shares no map or pointer with the first, so a
		// Validate that changes what they hold shows too.
		if again, _ := decode[C](tc.YAML); !reflect.DeepEqual(got, again) {
			t.Errorf("Validate changed %+v to %+v", again, got)
		}
	}
}

// Refusal is a change to the default that Validate must refuse, with an
// error starting Key (the key path within the section; the assembler adds
// the section's name).
type Refusal[C any] struct {
	Key    string
	Change func(*C)
}

// Refuses checks each refusal against def().
func Refuses[C any](t *testing.T, def func() C, validate func(C) error, refusals []Refusal[C]) {
	t.Helper()
	for _, r := range refusals {
		c := def()
		r.Change(&c)
		if err := validate(c); err == nil || !strings.HasPrefix(err.Error(), r.Key) {
			t.Errorf("Validate(%+v) = %v, want an error starting %q", c, err, r.Key)
		}
	}
}

// decode reads one section, unknown keys refused.
func decode[C any](text string) (C, error) {
	var c C
	dec := yaml.NewDecoder(strings.NewReader(text))
	dec.KnownFields(true)
	err := dec.Decode(&c)
	return c, err
}
