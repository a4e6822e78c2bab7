//go:build !cgo

package models

// TrimHeap does nothing without cgo: there is no C heap to trim.
func TrimHeap() {}
