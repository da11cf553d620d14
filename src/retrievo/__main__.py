from retrievo.cli.main import main

main()
