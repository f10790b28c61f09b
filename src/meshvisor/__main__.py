from meshvisor.cli import main

main()
