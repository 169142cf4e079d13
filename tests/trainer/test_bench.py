from trainer.bench import main


def test_bench_times_every_method_and_the_reference_where_there_is_one(capsys):
    main(["--arch", "WRN-10-1", "--dataset", "digits", "--batch-size", "8", "--batches", "1",
          "--device", "cpu"])
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split("  ")[0] for line in lines] == ["clean training", "PGD-10 AT", "TRADES-10", "MART-10"]
    assert [line.count("img/s") for line in lines] == [2, 2, 1, 1]
