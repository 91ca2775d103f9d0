trio-gotask new greeter
