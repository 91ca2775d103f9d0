from trio_gotask._cli import main

raise SystemExit(main(prog="python -m trio_gotask"))
