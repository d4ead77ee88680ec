// Package defaults owns the rule every configuration in this module
// follows: a zero field means "the default", and the package's
// DefaultConfig holds what that default is. A Config's withDefaults
// (or Validate) fills each zero field with Fill, so the rule is written
// once.
package defaults

// Fill sets *field to def if *field is the zero value of its type.
func Fill[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}
