cd greeter
go mod init example.com/greeter
go mod edit -replace github.com/trio-gotask/trio-gotask/go=../trio-gotask/go
go mod tidy
cd ..
