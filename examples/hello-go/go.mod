module hello-go

go 1.19

require nimbus.dev/lambda v0.0.0
