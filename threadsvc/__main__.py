from threadsvc.cli import main

main()
