// Package bench holds the measurements behind `fileshare bench …`: load
// generators and a cluster of real master processes to run them against.
// Every benchmark ends with one summary line; numbers are medians or
// percentiles measured in one run, because these machines are shared and
// noisy.
package bench
