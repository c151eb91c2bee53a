module authtarget

go 1.19
