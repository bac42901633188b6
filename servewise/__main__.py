from servewise.cli import main

main()
