//go:build !unix

package main

import "os"

// ttyColumns returns 0: on this system the width comes from $COLUMNS.
func ttyColumns(*os.File) int { return 0 }
