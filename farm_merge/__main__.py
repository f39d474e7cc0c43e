from farm_merge.cli import main

main()
