module nimbus.dev/lambda

go 1.18
