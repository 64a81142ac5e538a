from streamsafe.cli import main

main()
