module example.com/todoapp/deploy

go 1.26.0
